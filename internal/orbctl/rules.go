package orbctl

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// This file is OrbStack's rules and the lifecycle policy built on them, kept
// once for every caller: the CLI, the protocol's machine.connect and (through
// the CLI) the Python operations and facts.

// DefaultReadyTimeout bounds starting a machine and waiting until it answers
// commands, when the caller gives no timeout.
const DefaultReadyTimeout = 120 * time.Second

// nameRE and reservedNames are OrbStack's rule for machine names (scon's
// validator); orbctl create refuses other names.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.-]+$`)

var reservedNames = map[string]bool{
	"default": true, "vm": true, "host": true, "services": true, "gateway": true, "k8s": true, "docker": true,
}

// NameRule says OrbStack's rule for machine names in words.
const NameRule = "machine names are at least 2 characters: letters, digits, '-' and '.', starting with a letter or digit; " +
	"default, vm, host, services, gateway, k8s and docker are reserved"

// ValidName reports whether OrbStack accepts name as a machine name. A
// machine's ID also passes.
func ValidName(name string) bool {
	return nameRE.MatchString(name) && !reservedNames[name]
}

// ParseSize reads "4G", "2048M", "1.5G" or a plain number of unit bytes, in
// binary units as OrbStack's --memory and --disk do.
func ParseSize(s string, unit int64) (int64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("invalid size %q: use a number with an optional K/M/G/T unit, e.g. 4G", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	switch strings.ToUpper(m[2]) {
	case "K":
		unit = 1 << 10
	case "M":
		unit = 1 << 20
	case "G":
		unit = 1 << 30
	case "T":
		unit = 1 << 40
	}
	return int64(n * float64(unit)), nil
}

var sizeRE = regexp.MustCompile(`(?i)^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$`)

// MachineKey is orbctl's per-machine setting key; a name with dots is quoted,
// as orbctl expects: machine."a.b".cpu.
func MachineKey(name, key string) string {
	if strings.Contains(name, ".") {
		name = strconv.Quote(name)
	}
	return "machine." + name + "." + key
}

// restartKeys are the global settings of OrbStack's VM itself: they apply only
// after OrbStack restarts.
var restartKeys = map[string]bool{
	"cpu": true, "memory_mib": true, "rosetta": true, "network_proxy": true,
	"network_bridge": true, "network.https": true, "network.subnet4": true,
	"mount_hide_shared": true, "data_dir": true,
}

// NeedsRestart reports whether a setting applies only after OrbStack restarts.
func NeedsRestart(key string) bool { return restartKeys[key] }

// Limits are a machine's resource limits and mounts (OrbStack 2.1+), checked
// and in orbctl's units. Zero values and a nil Mounts are "not given".
type Limits struct {
	CPUs      int
	MemoryMiB int64
	DiskBytes int64
	Mounts    []string // nil = not given; empty = none
}

// ParseLimits reads limits as a user gives them: memory as "4G" or MiB, disk
// as "32G" or bytes.
func ParseLimits(cpus int, memory, disk string) (Limits, error) {
	l := Limits{CPUs: cpus}
	if cpus < 0 {
		return l, &Error{Kind: ErrBadArgument, Option: "cpus", Message: fmt.Sprintf("cpus must be a positive number, got %d", cpus)}
	}
	if memory != "" {
		b, err := ParseSize(memory, 1<<20)
		if err != nil {
			return l, &Error{Kind: ErrBadArgument, Option: "memory", Message: "memory: " + err.Error()}
		}
		l.MemoryMiB = b >> 20
	}
	if disk != "" {
		b, err := ParseSize(disk, 1)
		if err != nil {
			return l, &Error{Kind: ErrBadArgument, Option: "disk", Message: "disk: " + err.Error()}
		}
		l.DiskBytes = b
	}
	return l, nil
}

// Setting is one OrbStack key and a value for it.
type Setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Settings are the limits as machine.NAME.* keys, for an existing machine.
func (l Limits) Settings(name string) []Setting {
	var out []Setting
	if l.CPUs > 0 {
		out = append(out, Setting{MachineKey(name, "cpu"), strconv.Itoa(l.CPUs)})
	}
	if l.MemoryMiB > 0 {
		out = append(out, Setting{MachineKey(name, "memory_mib"), strconv.FormatInt(l.MemoryMiB, 10)})
	}
	if l.DiskBytes > 0 {
		out = append(out, Setting{MachineKey(name, "disk_bytes"), strconv.FormatInt(l.DiskBytes, 10)})
	}
	if l.Mounts != nil {
		// OrbStack 2.x keeps them as one comma-separated setting.
		out = append(out, Setting{MachineKey(name, "mounts"), strings.Join(l.Mounts, ",")})
	}
	return out
}

// ApplyTo passes the limits to `orbctl create`, in the units it reads: the
// same values Settings would set.
func (l Limits) ApplyTo(o *CreateOptions) {
	o.CPUs = l.CPUs
	if l.MemoryMiB > 0 {
		o.Memory = strconv.FormatInt(l.MemoryMiB, 10) + "M"
	}
	if l.DiskBytes > 0 {
		o.Disk = strconv.FormatInt(l.DiskBytes, 10) // plain bytes
		if l.DiskBytes%(1<<20) == 0 {
			o.Disk = strconv.FormatInt(l.DiskBytes>>20, 10) + "M"
		}
	}
	if l.Mounts != nil {
		o.Mounts = l.Mounts
	}
}

// newerFlags are the create flags o uses that OrbStack accepts from 2.1 on.
func (o CreateOptions) newerFlags() []string {
	var flags []string
	for _, f := range []struct {
		flag string
		used bool
	}{
		{"--cpus", o.CPUs > 0}, {"--memory", o.Memory != ""}, {"--disk", o.Disk != ""},
		{"--isolated", o.Isolated}, {"--isolate-network", o.IsolateNetwork}, {"--mount", len(o.Mounts) > 0},
	} {
		if f.used {
			flags = append(flags, f.flag)
		}
	}
	return flags
}

// RequireOrbStack21 refuses, before anything runs, features (create flags,
// per-machine limits) that OrbStack gained in 2.1 when this OrbStack is older:
// orbctl would answer "unknown flag" or "Unknown configuration key", which
// does not say that updating OrbStack is the fix. An unreadable version is
// orbctl's to judge.
func (c *Client) RequireOrbStack21(ctx context.Context, features []string) error {
	if len(features) == 0 {
		return nil
	}
	v, err := c.Version(ctx)
	if err != nil || !versionBefore(v.Version, 2, 1) {
		return nil
	}
	verb := "needs"
	if len(features) > 1 {
		verb = "need"
	}
	return &Error{Kind: ErrBadArgument, Args: []string{"version"},
		Message: fmt.Sprintf("%s %s OrbStack 2.1 or later; this Mac runs %s: update OrbStack (orbctl update) or leave them out", strings.Join(features, ", "), verb, v.Version)}
}

// versionBefore reports whether version "X.Y.Z" is older than major.minor.
func versionBefore(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	x, err1 := strconv.Atoi(parts[0])
	y, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return x < major || (x == major && y < minor)
}

// VersionCode is a version as one comparable number: major·10⁶ + minor·10⁴ +
// patch·10², the form `orbctl version` prints in parentheses; 0 when version
// is not X.Y[.Z].
func VersionCode(version string) int {
	parts := strings.SplitN(version, ".", 3)
	weights := []int{1_000_000, 10_000, 100}
	code := 0
	for i, p := range parts {
		p, _, _ = strings.Cut(p, "-")
		n, err := strconv.Atoi(p)
		if err != nil {
			return 0
		}
		code += n * weights[i]
	}
	if len(parts) < 2 {
		return 0
	}
	return code
}

// StartAndWait runs step (Start, Restart; nil for none) and waits until the
// machine answers commands, all within timeout (DefaultReadyTimeout when 0).
// A step that outlives the deadline is ErrNotReady.
func (c *Client) StartAndWait(ctx context.Context, name string, timeout time.Duration, step func(context.Context, string) error) error {
	if timeout < 0 {
		return badArgument(name, "timeout must not be negative, got %s", timeout)
	}
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	deadline := time.Now().Add(timeout)
	if step != nil {
		stepCtx, cancel := context.WithDeadline(ctx, deadline)
		err := step(stepCtx, name)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return &Error{Kind: ErrNotReady, Machine: name,
				Message: fmt.Sprintf("machine %s did not start within %s", name, timeout)}
		}
		if err != nil {
			return err
		}
	}
	return c.WaitReady(ctx, name, time.Until(deadline))
}

// distroNames maps the word `orbctl create` takes to the distro orbctl reports.
var distroNames = map[string]string{"arch": "archlinux", "void": "voidlinux", "alma": "almalinux", "rocky": "rockylinux"}

// versionAliases are the version numbers orbctl resolves to codenames when it
// creates a machine (and stores the codename).
var versionAliases = map[string]map[string]string{
	"ubuntu": {"20.04": "focal", "22.04": "jammy", "24.04": "noble", "24.10": "oracular", "25.04": "plucky", "25.10": "questing"},
	"debian": {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"},
	"devuan": {"4": "chimaera", "5": "daedalus"},
}

// ParseImage reads DISTRO[:VERSION] as orbctl reports it afterwards:
// "ubuntu:24.04" is ("ubuntu", "noble"), "arch" is ("archlinux", "").
func ParseImage(image string) (distro, version string, err error) {
	word, version, _ := strings.Cut(image, ":")
	if word == "" {
		return "", "", fmt.Errorf("invalid image %q: expected DISTRO[:VERSION], e.g. debian:bookworm", image)
	}
	distro = word
	if d, ok := distroNames[word]; ok {
		distro = d
	}
	if v, ok := versionAliases[distro][version]; ok {
		version = v
	}
	return distro, version, nil
}

// Wanted is what a machine should be, for Differences; "" and nil are not
// compared.
type Wanted struct {
	Image          string // DISTRO[:VERSION]; a bare distro accepts any version
	Arch           string
	Isolated       *bool
	IsolateNetwork *bool
}

// Differences says what of w an existing machine m differs in, each as
// "distro ubuntu (want debian)". Versions match after alias resolution on
// both sides (12 is bookworm) and regardless of case; a bare distro accepts
// any version, since OrbStack resolves it to the latest release at creation.
func Differences(m Machine, w Wanted) ([]string, error) {
	var out []string
	if w.Image != "" {
		distro, version, err := ParseImage(w.Image)
		if err != nil {
			return nil, err
		}
		if m.Distro != "" && m.Distro != distro {
			out = append(out, fmt.Sprintf("distro %s (want %s)", m.Distro, distro))
		}
		if version != "" && m.Version != "" && !sameVersion(distro, m.Version, version) {
			out = append(out, fmt.Sprintf("version %s (want %s)", m.Version, version))
		}
	}
	if w.Arch != "" && m.Arch != "" && m.Arch != w.Arch {
		out = append(out, fmt.Sprintf("arch %s (want %s)", m.Arch, w.Arch))
	}
	for _, f := range []struct {
		key    string
		wanted *bool
	}{{"isolated", w.Isolated}, {"isolate_network", w.IsolateNetwork}} {
		have, known := m.Config[f.key].(bool)
		if f.wanted != nil && known && have != *f.wanted {
			out = append(out, fmt.Sprintf("%s %t (want %t)", f.key, have, *f.wanted))
		}
	}
	return out, nil
}

func sameVersion(distro, have, want string) bool {
	resolve := func(v string) string {
		if r, ok := versionAliases[distro][v]; ok {
			return r
		}
		return v
	}
	return strings.EqualFold(resolve(have), resolve(want))
}
