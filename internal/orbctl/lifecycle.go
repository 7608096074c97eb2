package orbctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// CreateOptions are the arguments of `orbctl create`. Every field but Image
// and Name is optional; the zero value leaves it to orbctl. The 2.x fields
// (Isolated to Mounts) need OrbStack 2.1 or later: an older orbctl rejects
// them as unknown flags.
type CreateOptions struct {
	Image string // DISTRO[:VERSION], e.g. "debian:bookworm"
	Name  string
	Arch  string // "" = the host's
	User  string // "" = orbctl's default (the Mac user)
	// UserData is a cloud-init user-data file on the Mac (-c). orbctl reads
	// it relative to its working directory, which is ours.
	UserData       string
	Isolated       bool     // no shared files with macOS
	IsolateNetwork bool     // no network access to macOS or other machines
	CPUs           int      // 0 = unlimited
	Memory         string   // e.g. "2048M", "8G"; "" = unlimited
	Disk           string   // e.g. "16G"; "" = unlimited
	Mounts         []string // HOST:GUEST; only with Isolated
}

// createArgs is the argv of `orbctl create` for o. It refuses values that
// orbctl would read as flags and mounts without isolation, before anything
// runs.
func createArgs(o CreateOptions) ([]string, error) {
	if err := checkName("image", o.Image); err != nil {
		return nil, err
	}
	if err := checkName("machine name", o.Name); err != nil {
		return nil, err
	}
	args := []string{"create"}
	for _, opt := range []struct{ flag, what, value string }{
		{"-a", "architecture", o.Arch},
		{"-u", "user", o.User},
		{"-c", "user-data file", o.UserData},
		{"--memory", "memory size", o.Memory},
		{"--disk", "disk size", o.Disk},
	} {
		if opt.value == "" {
			continue
		}
		if err := checkName(opt.what, opt.value); err != nil {
			return nil, err
		}
		args = append(args, opt.flag, opt.value)
	}
	if o.CPUs < 0 {
		return nil, &Error{Kind: ErrBadArgument, Machine: o.Name, Option: "cpus",
			Message: fmt.Sprintf("CPU limit must not be negative, got %d", o.CPUs)}
	}
	if o.CPUs > 0 {
		args = append(args, "--cpus", strconv.Itoa(o.CPUs))
	}
	if o.Isolated {
		args = append(args, "--isolated")
	}
	if o.IsolateNetwork {
		args = append(args, "--isolate-network")
	}
	if len(o.Mounts) > 0 && !o.Isolated {
		return nil, &Error{Kind: ErrBadArgument, Machine: o.Name, Option: "mounts",
			Message: "mounts need an isolated machine: OrbStack mounts folders only into isolated machines (the others see all of macOS already); add --isolated"}
	}
	for _, m := range o.Mounts {
		if err := checkName("mount", m); err != nil {
			return nil, err
		}
		if host, guest, ok := strings.Cut(m, ":"); !ok || host == "" || guest == "" {
			return nil, &Error{Kind: ErrBadArgument, Machine: o.Name, Option: "mounts",
				Message: fmt.Sprintf("mount %q must be HOST:GUEST, e.g. /Users/me/src:/src", m)}
		}
		args = append(args, "--mount", m)
	}
	return append(args, o.Image, o.Name), nil
}

// CheckCreate checks o as Create would, without running anything.
func CheckCreate(o CreateOptions) error {
	_, err := createArgs(o)
	return err
}

// Create creates and starts a machine. A duplicate name is ErrMachineExists.
// Options OrbStack gained in 2.1 are refused on an older OrbStack before
// anything is created.
func (c *Client) Create(ctx context.Context, o CreateOptions) error {
	args, err := createArgs(o)
	if err != nil {
		return err
	}
	if err := c.RequireOrbStack21(ctx, o.newerFlags()); err != nil {
		return err
	}
	_, err = c.output(ctx, o.Name, args...)
	return err
}

// Start starts a machine; starting a running one is a no-op.
func (c *Client) Start(ctx context.Context, name string) error {
	return c.onMachine(ctx, "start", name)
}

// Stop stops one machine. It refuses an empty name because `orbctl stop` with
// no argument stops all of OrbStack.
func (c *Client) Stop(ctx context.Context, name string) error {
	return c.onMachine(ctx, "stop", name)
}

// Restart restarts one machine.
func (c *Client) Restart(ctx context.Context, name string) error {
	return c.onMachine(ctx, "restart", name)
}

func (c *Client) onMachine(ctx context.Context, verb, name string) error {
	if err := checkName("machine name", name); err != nil {
		return err
	}
	_, err := c.output(ctx, name, verb, name)
	return err
}

// Delete deletes a machine by name. It looks the machine up first and deletes
// by the name orbctl reports, because `orbctl delete <ULID>` crashes orbctl.
func (c *Client) Delete(ctx context.Context, name string) error {
	m, err := c.Info(ctx, name)
	if err != nil {
		return err
	}
	_, err = c.output(ctx, m.Name, "delete", "-f", m.Name)
	return err
}

// Clone copies machine src to a new, stopped machine dst.
func (c *Client) Clone(ctx context.Context, src, dst string) error {
	if err := checkName("source machine name", src); err != nil {
		return err
	}
	if err := checkName("new machine name", dst); err != nil {
		return err
	}
	_, err := c.output(ctx, src, "clone", src, dst)
	return err
}

// Rename renames a machine; it keeps its ID.
func (c *Client) Rename(ctx context.Context, oldName, newName string) error {
	if err := checkName("machine name", oldName); err != nil {
		return err
	}
	if err := checkName("new machine name", newName); err != nil {
		return err
	}
	_, err := c.output(ctx, oldName, "rename", oldName, newName)
	return err
}

// Export writes a machine to an archive at path (absolute; orbctl resolves
// relative paths against its own cwd).
func (c *Client) Export(ctx context.Context, name, path string) error {
	if err := checkName("machine name", name); err != nil {
		return err
	}
	if err := checkName("output path", path); err != nil {
		return err
	}
	_, err := c.output(ctx, name, "export", name, path)
	return err
}

// Import creates a machine from an archive; name "" keeps the archived name.
func (c *Client) Import(ctx context.Context, path, name string) error {
	if err := checkName("input path", path); err != nil {
		return err
	}
	args := []string{"import"}
	if name != "" {
		if err := checkName("machine name", name); err != nil {
			return err
		}
		args = append(args, "-n", name)
	}
	_, err := c.output(ctx, name, append(args, path)...)
	return err
}

// ConfigGet returns one configuration value, on every OrbStack that has
// `config get`: 1.11.3's ignored KEY and printed every "key: value" line, so
// the KEY's line is picked out; before 1.11.3 there is no `config get`, which
// is an error pointing at `config show`.
func (c *Client) ConfigGet(ctx context.Context, key string) (string, error) {
	if err := checkName("config key", key); err != nil {
		return "", err
	}
	args := []string{"config", "get", key}
	raw, err := c.output(ctx, "", args...)
	if err != nil {
		if strings.Contains(err.Error(), `unknown command "get"`) {
			return "", &Error{Kind: ErrFailed, Args: args,
				Message: "this OrbStack has no \"orbctl config get\" (added in 1.11.3): read " + key + " in \"orbctl config show\""}
		}
		return "", err
	}
	out := strings.TrimRight(string(raw), "\r\n")
	if !strings.Contains(out, "\n") {
		return out, nil
	}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", &Error{Kind: ErrBadArgument, Args: args,
		Message: "Unknown configuration key: " + key + " (not in orbctl's list of settings)"}
}

// ConfigShow returns every setting `orbctl config show` lists, as strings.
func (c *Client) ConfigShow(ctx context.Context) (map[string]string, error) {
	out, err := c.output(ctx, "", "config", "show")
	if err != nil {
		return nil, err
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) != "" {
			settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return settings, nil
}

// Default returns the default machine's name, "" when there are no machines.
func (c *Client) Default(ctx context.Context) (string, error) {
	out, err := c.output(ctx, "", "default")
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "no machines") {
			return "", nil
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// SetDefault makes name the default machine (the one `orb` uses).
func (c *Client) SetDefault(ctx context.Context, name string) error {
	return c.onMachine(ctx, "default", name)
}

// ConfigSet sets one configuration value.
func (c *Client) ConfigSet(ctx context.Context, key, value string) error {
	if err := checkName("config key", key); err != nil {
		return err
	}
	if strings.HasPrefix(value, "-") {
		return badArgument("", "config value %q must not start with '-'", value)
	}
	_, err := c.output(ctx, "", "config", "set", key, value)
	return err
}

// Status reports whether OrbStack runs: `orbctl status` prints Running (exit 0),
// Stopped (exit 1) or Starting (exit 2).
func (c *Client) Status(ctx context.Context) (string, error) {
	out, err := c.output(ctx, "", "status")
	word := strings.TrimSpace(string(out))
	if err != nil {
		if e, ok := err.(*Error); ok && word != "" && (e.ExitCode == 1 || e.ExitCode == 2) {
			return word, nil
		}
		return "", err
	}
	return word, nil
}

// VersionInfo is what `orbctl version` prints.
type VersionInfo struct {
	Version   string // e.g. "2.2.3"
	Commit    string // the Commit line after "Commit: "
	Simulator bool   // our simulator marks its commit "(orbsim)"
	Raw       string
}

// Version runs `orbctl version`.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	out, err := c.output(ctx, "", "version")
	if err != nil {
		return VersionInfo{}, err
	}
	return ParseVersion(string(out)), nil
}

// ParseVersion reads "Version: 2.2.3 (2020300)\nCommit: <sha> (<describe>)".
func ParseVersion(out string) VersionInfo {
	v := VersionInfo{Raw: strings.TrimSpace(out)}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "Version:"); ok {
			v.Version, _, _ = strings.Cut(strings.TrimSpace(rest), " ")
		}
		if rest, ok := strings.CutPrefix(line, "Commit:"); ok {
			v.Commit = strings.TrimSpace(rest)
			v.Simulator = strings.Contains(rest, "(orbsim)")
		}
	}
	return v
}

// Logs returns a machine's console log (with all, OrbStack's runtime logs
// too). The machine is looked up first: `orbctl logs` reports a missing one
// on stderr but may exit 0.
func (c *Client) Logs(ctx context.Context, name string, all bool) (string, error) {
	if _, err := c.Info(ctx, name); err != nil {
		return "", err
	}
	args := []string{"logs", name}
	if all {
		args = append(args, "--all")
	}
	out, err := c.output(ctx, name, args...)
	return string(out), err
}

// SSHInfo is how to reach machines through OrbStack's SSH proxy, from the
// details `orbctl ssh` prints.
type SSHInfo struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"` // OrbStack's routing user: default, MACHINE or USER@MACHINE
	Key  string `json:"key"`
}

// SSH reads `orbctl ssh`'s connection details, with OrbStack's defaults for
// any it does not print.
func (c *Client) SSH(ctx context.Context) (SSHInfo, error) {
	out, err := c.output(ctx, "", "ssh")
	if err != nil {
		return SSHInfo{}, err
	}
	info := SSHInfo{Host: "localhost", Port: 32222, User: "default", Key: "~/.orbstack/ssh/id_ed25519"}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			continue
		}
		switch k {
		case "Host":
			info.Host = v
		case "Port":
			if p, err := strconv.Atoi(v); err == nil {
				info.Port = p
			}
		case "User":
			info.User = v
		case "Private key":
			info.Key = v
		}
	}
	return info, nil
}
