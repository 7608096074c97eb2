package orbctl

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Machine is one OrbStack Linux machine as the rest of the program sees it,
// whatever orbctl version described it. Its JSON form is the protocol's Machine.
type Machine struct {
	Name        string  `json:"name"`
	ID          string  `json:"id"`
	State       string  `json:"state"`
	Distro      string  `json:"distro"`
	Version     string  `json:"version"`
	Arch        string  `json:"arch"`
	Variant     string  `json:"variant"`
	DefaultUser string  `json:"default_user"`
	Isolated    bool    `json:"isolated"`
	IP4         string  `json:"ip4"`
	IP6         string  `json:"ip6"`
	DiskSize    *uint64 `json:"disk_size"`
	// Config is every key orbctl reported under `config` (2.x adds
	// isolate_network, forward_ssh_agent, ...); not part of the protocol.
	Config map[string]any `json:"-"`
}

// record is orbctl's ContainerRecord in all its documented shapes: `isolated`
// moved from the top level into `config` in v0.15; 2.x adds config fields we
// do not need (and ignore).
type record struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
	Image struct {
		Distro  string `json:"distro"`
		Version string `json:"version"`
		Arch    string `json:"arch"`
		Variant string `json:"variant"`
	} `json:"image"`
	Config   map[string]any `json:"config"`
	Isolated bool           `json:"isolated"` // before v0.15
}

func (r record) machine() Machine {
	m := Machine{
		Name: r.Name, ID: r.ID, State: r.State,
		Distro: r.Image.Distro, Version: r.Image.Version, Arch: r.Image.Arch, Variant: r.Image.Variant,
		Isolated: r.Isolated,
	}
	if r.Config != nil {
		m.Isolated, _ = r.Config["isolated"].(bool)
		m.DefaultUser, _ = r.Config["default_username"].(string)
		m.Config = r.Config
	}
	return m
}

// ParseList parses `orbctl list -f json`: an array of records, or `null` for
// no machines before v0.15.
func ParseList(out []byte) ([]Machine, error) {
	var recs []record
	if err := json.Unmarshal(bytes.TrimSpace(out), &recs); err != nil {
		return nil, fmt.Errorf("cannot parse `orbctl list -f json` output: %w", err)
	}
	machines := make([]Machine, 0, len(recs))
	for _, r := range recs {
		machines = append(machines, r.machine())
	}
	return machines, nil
}

// ParseInfo parses `orbctl info NAME -f json`: a bare record up to v1.9, then
// {"record": …, "disk_size": …} from v1.10, with ip4/ip6 from v1.11.3.
func ParseInfo(out []byte) (Machine, error) {
	var wrapped struct {
		Record   *record `json:"record"`
		DiskSize *uint64 `json:"disk_size"`
		IP4      string  `json:"ip4"`
		IP6      string  `json:"ip6"`
	}
	if err := json.Unmarshal(out, &wrapped); err != nil {
		return Machine{}, fmt.Errorf("cannot parse `orbctl info -f json` output: %w", err)
	}
	if wrapped.Record == nil {
		var bare record
		if err := json.Unmarshal(out, &bare); err != nil {
			return Machine{}, fmt.Errorf("cannot parse `orbctl info -f json` output: %w", err)
		}
		if bare.Name == "" {
			return Machine{}, fmt.Errorf("cannot parse `orbctl info -f json` output: no machine name in %q", truncate(out))
		}
		return bare.machine(), nil
	}
	m := wrapped.Record.machine()
	m.DiskSize = wrapped.DiskSize
	m.IP4, m.IP6 = wrapped.IP4, wrapped.IP6
	return m, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
