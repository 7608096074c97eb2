//go:build linux

package orbctlcmd

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
)

// The JSON shapes of §3, field order as OrbStack's Go structs.
type imageJSON struct {
	Distro  string `json:"distro"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Variant string `json:"variant"`
}

type configJSON struct {
	Isolated        bool   `json:"isolated"`
	DefaultUsername string `json:"default_username"`
}

// configJSON2 is the 2.1+ config. The reference marks the field order as
// unconfirmed; we follow [MACHU]'s sample (isolated, isolate_network, ...,
// default_username). http_port/https_port are left out: their type is unknown.
type configJSON2 struct {
	Isolated        bool   `json:"isolated"`
	IsolateNetwork  bool   `json:"isolate_network"`
	ForwardSSHAgent bool   `json:"forward_ssh_agent"`
	DefaultUsername string `json:"default_username"`
}

type recordJSON struct {
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Image  imageJSON `json:"image"`
	Config any       `json:"config,omitempty"`
	// Isolated is the pre-0.15 top-level flag that config replaced.
	Isolated *bool  `json:"isolated,omitempty"`
	Builtin  bool   `json:"builtin"`
	State    string `json:"state"`
}

type infoJSON struct {
	Record   recordJSON `json:"record"`
	DiskSize *uint64    `json:"disk_size"`
	IP4      string     `json:"ip4,omitempty"`
	IP6      string     `json:"ip6,omitempty"`
}

func (a *App) record(m *state.Machine) recordJSON {
	r := recordJSON{ID: m.ID, Name: m.Name, State: m.StateWord(),
		Image: imageJSON{Distro: m.Distro, Version: m.Version, Arch: m.Arch, Variant: m.Variant}}
	switch {
	case a.Version.AtLeast(2, 1, 0):
		// [MACHU] ADR: forward_ssh_agent is reported true on normal machines.
		r.Config = configJSON2{Isolated: m.Isolated, IsolateNetwork: m.IsolateNetwork, ForwardSSHAgent: m.ForwardsSSHAgent(), DefaultUsername: m.DefaultUser}
	case a.Version.AtLeast(0, 15, 0):
		r.Config = configJSON{Isolated: m.Isolated, DefaultUsername: m.DefaultUser}
	default:
		iso := m.Isolated
		r.Isolated = &iso
	}
	return r
}

// writeJSON prints like OrbStack's json.Encoder with SetIndent("", "  ").
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// byteCountSI formats like OrbStack's ByteCountSI ("962.9 MB").
func byteCountSI(b uint64) string {
	const unit = 1000
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(b)/float64(div), "kMGTPE"[exp])
}
