//go:build linux

package orbctlcmd

import (
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/netsim"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"github.com/spf13/cobra"
)

// NewCmdSSH is `orbctl ssh` (§4, §8): connection help only. The simulator
// runs no SSH server; the text is what OrbStack prints.
func NewCmdSSH(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh",
		Short: "Show SSH connection details",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprint(app.Stdout, `SSH command:
    ssh orb
For more advanced usage:
    Connect to a specific machine: ssh MACHINE@orb
    Log in as a specific user: ssh USER@MACHINE@orb

To connect from other programs, use these details:
    Host: localhost
    Port: 32222
    User: default
    Private key: ~/.orbstack/ssh/id_ed25519
For example:
    ssh -p 32222 -i ~/.orbstack/ssh/id_ed25519 default@localhost
`)
			return nil
		},
	}
}

// globalConfig holds the global keys `config show` lists at version v, with
// OrbStack-like defaults: the VmConfig keys of §4 (1.11 source), and from
// 2.0 the keys of the 2.0.4 recording in §10 (GH#2341): power.pause_in_sleep
// instead of power.pause_on_sleep, plus machines.forward_ports,
// machines.expose_ports_to_lan and docker.expose_ports_to_lan. The 2.x
// defaults of the new keys are our guess (GH#2676's user turned
// expose_ports_to_lan on and forward_ports off, so we take the opposite as
// the default; docker.expose_ports_to_lan follows Docker's own default).
func globalConfig(v Version) map[string]string {
	c := map[string]string{
		"memory_mib": "8192", "cpu": strconv.Itoa(runtime.NumCPU()), "rosetta": "true",
		"network_proxy": "auto", "network_bridge": "true", "network.https": "true",
		"network.subnet4": "192.168.138.0/23", "mount_hide_shared": "false", "data_dir": "",
		"data_allow_backup": "false", "docker.set_context": "true", "docker.node_name": "orbstack",
		"setup.use_admin": "true", "k8s.enable": "false", "k8s.expose_services": "false",
		"ssh.expose_port": "false", "power.pause_on_sleep": "true", "app.start_at_login": "false",
	}
	if v.AtLeast(2, 0, 0) {
		delete(c, "power.pause_on_sleep")
		c["power.pause_in_sleep"] = "true"
		c["machines.forward_ports"] = "true"
		c["machines.expose_ports_to_lan"] = "false"
		c["docker.expose_ports_to_lan"] = "true"
	}
	return c
}

// configKind says what a global key's value must be (OrbStack's config set
// parses them with strconv; other keys take any text).
func configKind(key string) string {
	switch key {
	case "memory_mib", "cpu":
		return "uint"
	case "network_proxy", "network.subnet4", "data_dir", "docker.node_name":
		return "text"
	}
	return "bool"
}

// restartKeys need an OrbStack restart to apply (our reading of the source).
var restartKeys = map[string]bool{"memory_mib": true, "cpu": true, "rosetta": true, "network_proxy": true,
	"network_bridge": true, "network.https": true, "network.subnet4": true, "mount_hide_shared": true, "data_dir": true}

// machineKeys are the per-machine keys: only username before 2.1 (§10: the
// 2.0.4 recording has no other), the limits and isolation keys from 2.1.
func machineKeys(v Version) []string {
	keys := []string{"username"}
	if v.AtLeast(2, 1, 0) {
		keys = append(keys, "cpu", "memory_mib", "disk_bytes", "isolated", "forward_ssh_agent", "isolate_network", "mounts")
	}
	return keys
}

func quoteName(n string) string {
	if strings.Contains(n, ".") {
		return `"` + n + `"`
	}
	return n
}

func machineValue(m *state.Machine, key string) string {
	switch key {
	case "username":
		return m.DefaultUser
	case "cpu":
		return strconv.Itoa(m.CPUs)
	case "memory_mib":
		return strconv.Itoa(m.MemoryMiB)
	case "disk_bytes":
		return strconv.FormatInt(m.DiskBytes, 10)
	case "isolated":
		return strconv.FormatBool(m.Isolated)
	case "forward_ssh_agent":
		return strconv.FormatBool(m.ForwardsSSHAgent())
	case "isolate_network":
		return strconv.FormatBool(m.IsolateNetwork)
	case "mounts":
		return strings.Join(m.Mounts, ",")
	}
	return ""
}

// configLines is every key and value; show prints only keys with a value
// (§10: OrbStack prints no empty "data_dir:" line; its VmConfig marks such
// fields omitempty), get answers for any key.
func (a *App) configLines(inv *state.Inventory) (map[string]string, []string) {
	all := globalConfig(a.Version)
	for k, v := range inv.Config {
		if _, ok := all[k]; ok { // a key set under another version may not exist in this one
			all[k] = v
		}
	}
	for _, m := range inv.Machines {
		for _, k := range machineKeys(a.Version) {
			all["machine."+quoteName(m.Name)+"."+k] = machineValue(m, k)
		}
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return all, keys
}

// splitMachineKey parses machine.NAME.KEY and machine."a.b".KEY.
func splitMachineKey(key string) (name, sub string, ok bool) {
	rest, ok := strings.CutPrefix(key, "machine.")
	if !ok {
		return "", "", false
	}
	if strings.HasPrefix(rest, `"`) {
		end := strings.Index(rest[1:], `"`)
		if end < 0 {
			return "", "", false
		}
		name, rest = rest[1:end+1], rest[end+2:]
		sub, ok = strings.CutPrefix(rest, ".")
		return name, sub, ok
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// NewCmdConfig is `orbctl config show|get|set` (§2, §4).
func NewCmdConfig(app *App) *cobra.Command {
	cfg := &cobra.Command{Use: "config", Short: "Change OrbStack settings", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() }}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show current settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.Store.View(func(inv *state.Inventory) error {
				all, keys := app.configLines(inv)
				for _, k := range keys {
					if all[k] != "" {
						fmt.Fprintf(app.Stdout, "%s: %s\n", k, all[k])
					}
				}
				return nil
			})
		},
	}
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Get a setting",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.Store.View(func(inv *state.Inventory) error {
				all, keys := app.configLines(inv)
				if !app.Version.AtLeast(2, 0, 0) {
					// 1.11.3 ignores KEY and prints everything (a bug, §2).
					for _, k := range keys {
						if all[k] != "" {
							fmt.Fprintf(app.Stdout, "%s: %s\n", k, all[k])
						}
					}
					return nil
				}
				if name, _, ok := splitMachineKey(args[0]); ok && inv.ByName(name) == nil {
					return notFound(name)
				}
				v, ok := all[args[0]]
				if !ok {
					fmt.Fprintf(app.Stderr, "Unknown configuration key: %s\n", args[0])
					return exitStatus(1)
				}
				fmt.Fprintln(app.Stdout, v)
				return nil
			})
		},
	}
	set := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change a setting",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, value := args[0], args[1]
			return app.Store.Update(func(inv *state.Inventory) error {
				if name, sub, ok := splitMachineKey(key); ok {
					m := inv.ByName(name)
					if m == nil {
						return notFound(name)
					}
					return app.setMachineKey(m, sub, key, value)
				}
				if _, ok := globalConfig(app.Version)[key]; !ok {
					fmt.Fprintf(app.Stderr, "Unknown configuration key: %s\n", key)
					return exitStatus(1)
				}
				if err := app.checkConfigValue(key, value); err != nil {
					return err
				}
				inv.Config[key] = value
				if restartKeys[key] {
					fmt.Fprintf(app.Stdout, "Restart OrbStack with \"%s stop\" to apply changes.\n", app.Program)
				}
				return nil
			})
		},
	}
	if !app.Version.AtLeast(1, 11, 3) {
		cfg.AddCommand(show, set) // `config get` arrived in 1.11.3
	} else {
		cfg.AddCommand(show, get, set)
	}
	return cfg
}

// checkConfigValue refuses what OrbStack refuses. network.subnet4 (2.x) must
// be an IPv4 /23, checked with the texts of OrbStack's netconf. OrbStack
// itself may accept the value and fail when the VM next starts (GH#2095 shows
// `failed to parse network config: subnet 'invalid Prefix' is not an IPv4
// prefix` at start); refusing at set time, as a server error, is our choice.
func (a *App) checkConfigValue(key, value string) error {
	switch configKind(key) {
	case "uint":
		if n, err := strconv.ParseUint(value, 10, 64); err != nil || (key == "cpu" && n < 1) {
			return fmt.Errorf("invalid value for %s: %s", key, value)
		}
	case "bool":
		if _, err := strconv.ParseBool(value); err != nil {
			return fmt.Errorf("invalid value for %s: %s", key, value)
		}
	}
	if key == "network.subnet4" && a.Version.AtLeast(2, 0, 0) {
		if _, err := netsim.Plan2(value); err != nil {
			return rpcErrorf("%v", err)
		}
	}
	return nil
}

func (a *App) setMachineKey(m *state.Machine, sub, key, value string) error {
	known := false
	for _, k := range machineKeys(a.Version) {
		known = known || k == sub
	}
	if !known {
		fmt.Fprintf(a.Stderr, "Unknown configuration key: %s\n", key)
		return exitStatus(1)
	}
	bad := func() error { return fmt.Errorf("invalid value for %s: %s", key, value) }
	switch sub {
	case "username":
		if !m.Running() {
			if err := a.RT.AddUser(m, value); err != nil {
				return rpcErrorf("%v", err)
			}
		} else if err := a.RT.AddUserRunning(m, value); err != nil {
			return rpcErrorf("%v", err)
		}
		m.DefaultUser = value
	case "cpu", "memory_mib":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return bad()
		}
		if sub == "cpu" {
			m.CPUs = n
		} else {
			m.MemoryMiB = n
		}
	case "disk_bytes":
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 0 {
			return bad()
		}
		m.DiskBytes = n
	case "isolated", "isolate_network", "forward_ssh_agent":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad()
		}
		switch sub {
		case "isolated":
			m.Isolated = b
		case "isolate_network":
			m.IsolateNetwork = b
		case "forward_ssh_agent":
			m.ForwardSSHAgent = &b
		}
	case "mounts":
		m.Mounts = nil
		for _, s := range strings.Split(value, ",") {
			if s != "" {
				m.Mounts = append(m.Mounts, s)
			}
		}
	}
	return nil
}

// NewCmdStatus is `orbctl status` (§2): Running 0, Stopped 1, Starting 2.
func NewCmdStatus(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show OrbStack status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if app.VMMode == "starting" {
				fmt.Fprintln(app.Stdout, "Starting")
				return exitStatus(2)
			}
			running := false
			if err := app.Store.View(func(inv *state.Inventory) error { running = app.vmRunning(inv); return nil }); err != nil {
				return err
			}
			if !running {
				fmt.Fprintln(app.Stdout, "Stopped")
				return exitStatus(1)
			}
			fmt.Fprintln(app.Stdout, "Running")
			return nil
		},
	}
}

// SimulatorCommit stands where OrbStack prints its git commit; "(orbsim)" in
// the describe slot is how the connector's doctor recognises the simulator.
const SimulatorCommit = "0000000000000000000000000000000000000000"

// NewCmdVersion is `orbctl version` (§2).
func NewCmdVersion(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(app.Stdout, "Version: %s (%d)\nCommit: %s (orbsim)\n", app.Version, app.Version.Code(), SimulatorCommit)
			return nil
		},
	}
}

// NewCmdUpdate is `orbctl update` (§2); the simulator is always up to date.
func NewCmdUpdate(app *App) *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Update OrbStack",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if check {
				fmt.Fprintln(app.Stdout, "OrbStack is up to date.")
				return nil
			}
			fmt.Fprintln(app.Stdout, "OrbStack updater will open in a new window.")
			return nil
		},
	}
	cmd.Flags().BoolVarP(&check, "check", "c", false, "Check for updates only")
	return cmd
}
