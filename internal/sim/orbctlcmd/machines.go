//go:build linux

package orbctlcmd

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/distro"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/vm"
	"github.com/spf13/cobra"
)

// NewCmdList is `orbctl list` (§2, §3.2, §4).
func NewCmdList(app *App) *cobra.Command {
	var running, quiet bool
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List machines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("invalid format: %s", format)
			}
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.View(func(inv *state.Inventory) error {
				var ms []*state.Machine
				for _, m := range inv.Machines {
					if !running || m.Running() {
						ms = append(ms, m)
					}
				}
				if quiet {
					for _, m := range ms {
						fmt.Fprintln(app.Stdout, m.Name)
					}
					return nil
				}
				if format == "json" {
					recs := []recordJSON{}
					for _, m := range ms {
						recs = append(recs, app.record(m))
					}
					if len(recs) == 0 && !app.Version.AtLeast(0, 15, 0) {
						return writeJSON(app.Stdout, nil) // "null" before v0.15
					}
					return writeJSON(app.Stdout, recs)
				}
				if len(ms) == 0 {
					// Sic: OrbStack prints a literal backslash-n here (§4).
					fmt.Fprint(app.Stderr, `\nUse "orbctl" create to create a machine.`+"\n")
					return nil
				}
				return app.listText(ms)
			})
		},
	}
	cmd.Flags().BoolVarP(&running, "running", "r", false, "Only show running machines")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only show machine names")
	cmd.Flags().StringVarP(&format, "format", "f", "text", "Output format (text, json)")
	return cmd
}

func (a *App) listText(ms []*state.Machine) error {
	w := tabwriter.NewWriter(a.Stdout, 0, 0, 2, ' ', 0)
	withSize, withIP := a.Version.AtLeast(1, 10, 0), a.Version.AtLeast(1, 11, 3)
	if isTTY(a.Stdout) {
		h, d := "NAME\tSTATE\tDISTRO\tVERSION\tARCH", "----\t-----\t------\t-------\t----"
		if withSize {
			h, d = h+"\tSIZE", d+"\t----"
		}
		if withIP {
			h, d = h+"\tIP", d+"\t--"
		}
		fmt.Fprintln(w, h)
		fmt.Fprintln(w, d)
	}
	for _, m := range ms {
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", m.Name, m.StateWord(), m.Distro, m.Version, m.Arch)
		if withSize {
			line += "\t" + byteCountSI(vm.DiskSize(a.Store.MachineDir(m.ID)))
		}
		if withIP {
			line += "\t" + vm.IP(m)
		}
		fmt.Fprintln(w, line)
	}
	return w.Flush()
}

// NewCmdInfo is `orbctl info` (§3.3, §4).
func NewCmdInfo(app *App) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "info [ID/NAME]",
		Aliases: []string{"i"},
		Short:   "Get info about a machine",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.View(func(inv *state.Inventory) error {
				m := inv.ByKey(args[0])
				if m == nil {
					return notFound(args[0])
				}
				size := vm.DiskSize(app.Store.MachineDir(m.ID))
				ip4 := vm.IP(m)
				if format == "json" {
					if !app.Version.AtLeast(1, 10, 0) {
						return writeJSON(app.Stdout, app.record(m))
					}
					info := infoJSON{Record: app.record(m), DiskSize: &size}
					if app.Version.AtLeast(1, 11, 3) {
						info.IP4, info.IP6 = ip4, vm.IP6(m)
					}
					return writeJSON(app.Stdout, info)
				}
				out := fmt.Sprintf("ID: %s\nName: %s\nState: %s\n\nDistro: %s\nVersion: %s\nArchitecture: %s\n",
					m.ID, m.Name, m.StateWord(), m.Distro, m.Version, m.Arch)
				if app.Version.AtLeast(1, 10, 0) {
					out += "\nDisk usage: " + byteCountSI(size) + "\n"
				}
				if app.Version.AtLeast(1, 11, 3) && ip4 != "" {
					out += "\nIPv4: " + ip4 + "\n"
					if ip6 := vm.IP6(m); ip6 != "" {
						out += "IPv6: " + ip6 + "\n"
					}
				}
				fmt.Fprint(app.Stdout, out+"\n")
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "text", "Output format (text, json)")
	return cmd
}

// NewCmdCreate is `orbctl create` (§2, §5, §9).
func NewCmdCreate(app *App) *cobra.Command {
	var o struct {
		user, arch, userData, memory, disk string
		setPassword, isolated, isolateNet  bool
		cpus                               int
		mounts                             []string
	}
	cmd := &cobra.Command{
		Use:     "create [flags] DISTRO[:VERSION] [MACHINE_NAME]",
		Aliases: []string{"add", "new"},
		Short:   "Create a new machine",
		Long: "Create a new machine with the specified distro.\n\nSupported distros: " + strings.Join(distro.Words(), " ") +
			"\n\nSupported CPU architectures: " + strings.Join(distro.Arches(), " "),
		Example: "  orb create ubuntu\n  orb create -a arm64 ubuntu:mantic\n  orb create -a amd64 fedora foo",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			word, version, _ := strings.Cut(args[0], ":")
			if !distro.Known(word) {
				return fmt.Errorf("invalid distro: %s", word)
			}
			arch := o.arch
			if arch == "" {
				arch = distro.HostArch()
			}
			if arch != "arm64" && arch != "amd64" {
				return fmt.Errorf("invalid architecture: %s", arch)
			}
			if len(o.mounts) > 0 && !o.isolated {
				// [MACHU]: mounts need --isolated. The wording is our guess.
				return fmt.Errorf("--mount requires --isolated")
			}
			var userData []byte
			if o.userData != "" {
				var err error
				if userData, err = os.ReadFile(o.userData); err != nil {
					return err
				}
			}
			memory, err := parseSize(o.memory, 1<<20)
			if err != nil {
				return fmt.Errorf("invalid memory: %s", o.memory)
			}
			disk, err := parseSize(o.disk, 1)
			if err != nil {
				return fmt.Errorf("invalid disk size: %s", o.disk)
			}
			name := word
			if len(args) == 2 {
				name = args[1]
			}
			user := o.user
			if user == "" {
				user = app.MacUser
			}
			var password string
			if o.setPassword {
				var err error
				if password, err = app.promptPassword(); err != nil {
					return err
				}
			}
			if err := app.ensureVM(); err != nil {
				return err
			}
			img, err := distro.Resolve(word, version, arch, userData != nil, app.Version.Major)
			if err != nil {
				return rpcErrorf("create '%s': %v", name, err)
			}
			base := "/"
			if dir := os.Getenv("ORBSIM_ROOTFS_" + strings.ToUpper(word)); dir != "" {
				if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
					return rpcErrorf("create '%s': make rootfs: ORBSIM_ROOTFS_%s=%s is not a directory", name, strings.ToUpper(word), dir)
				}
				base = dir
			}
			m := &state.Machine{ID: state.NewULID(), Name: name, Distro: img.Distro, Version: img.Version, Arch: img.Arch,
				Variant: img.Variant, DefaultUser: user, Base: base, Isolated: o.isolated, IsolateNetwork: o.isolateNet,
				CPUs: o.cpus, MemoryMiB: int(memory >> 20), DiskBytes: disk, Mounts: o.mounts, UserData: string(userData)}
			err = app.Store.Update(func(inv *state.Inventory) error {
				if !distro.ValidName(name) {
					return rpcErrorf("create '%s': %s", name, distro.InvalidNameMessage(name))
				}
				if inv.ByName(name) != nil {
					return rpcErrorf("create '%s': machine already exists: '%s'", name, name)
				}
				app.RT.Reconcile(inv)
				if err := app.RT.Prepare(m); err != nil {
					app.RT.Remove(m)
					return rpcErrorf("create '%s': make rootfs: %v", name, err)
				}
				inv.Machines = append(inv.Machines, m)
				if err := app.RT.Start(m); err != nil {
					inv.Remove(m.ID)
					app.RT.Remove(m)
					return rpcErrorf("create '%s': %v", name, err)
				}
				if inv.DefaultID == "" || inv.ByID(inv.DefaultID) == nil {
					inv.DefaultID = m.ID
				}
				app.RT.RefreshHosts(inv)
				return nil
			})
			if err != nil {
				return err
			}
			if password != "" {
				if err := app.setPassword(m, password); err != nil {
					return err
				}
			}
			if strings.HasPrefix(string(userData), "#!") {
				return app.runUserData(m)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.user, "user", "u", "", "Username for the default user")
	f.BoolVarP(&o.setPassword, "set-password", "p", false, "Set a password for the default user")
	f.StringVarP(&o.arch, "arch", "a", "", "Override the default architecture")
	f.StringVarP(&o.userData, "user-data", "c", "", "Path to custom cloud-init user data")
	if app.Version.AtLeast(2, 1, 0) {
		f.BoolVar(&o.isolated, "isolated", false, "Isolate the machine from macOS (no shared files)")
		f.BoolVar(&o.isolateNet, "isolate-network", false, "Isolate the machine's network")
		f.IntVar(&o.cpus, "cpus", 0, "CPU limit")
		f.StringVar(&o.memory, "memory", "", "Memory limit (e.g. 2048M, 8G)")
		f.StringVar(&o.disk, "disk", "", "Disk limit (e.g. 16G)")
		f.StringArrayVar(&o.mounts, "mount", nil, "Mount HOST:GUEST (isolated machines only)")
	}
	return cmd
}

// parseSize reads "2048M", "8G", "512K" or a plain number of unit bytes.
func parseSize(s string, unit int64) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult, num := unit, s
	if m, ok := map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[strings.ToUpper(s[len(s)-1:])]; ok {
		mult, num = m, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// resolveAll looks every key up first, as delete/start/stop do (§2): one
// missing name fails the whole command before anything changes.
func resolveAll(inv *state.Inventory, keys []string) ([]*state.Machine, error) {
	var out []*state.Machine
	for _, k := range keys {
		m := inv.ByKey(k)
		if m == nil {
			return nil, notFound(k)
		}
		out = append(out, m)
	}
	return out, nil
}

// NewCmdDelete is `orbctl delete` (§2), including the ULID panic.
func NewCmdDelete(app *App) *cobra.Command {
	var all, force bool
	cmd := &cobra.Command{
		Use:   "delete [flags] [ID/NAME]...",
		Short: "Delete machines",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !all {
				return fmt.Errorf("no machines specified")
			}
			if err := app.ensureVM(); err != nil {
				return err
			}
			var targets []string
			err := app.Store.View(func(inv *state.Inventory) error {
				if all {
					for _, m := range inv.Machines {
						targets = append(targets, m.Name)
					}
					return nil
				}
				for _, k := range args {
					if inv.ByName(k) == nil && inv.ByID(k) != nil {
						// OrbStack ≤2.2.3 dereferences a nil record when given a
						// ULID (delete.go:141) and dies with a Go panic, exit 2.
						var rec *state.Machine
						fmt.Fprintln(app.Stdout, rec.Name)
					}
				}
				ms, err := resolveAll(inv, args)
				for _, m := range ms {
					targets = append(targets, m.Name)
				}
				return err
			})
			if err != nil {
				return err
			}
			if !force && isTTY(app.Stdin) && len(targets) > 0 {
				fmt.Fprintf(app.Stdout, "Continue [y/N]? ")
				answer, _ := bufio.NewReader(app.Stdin).ReadString('\n')
				answer = strings.ToLower(strings.TrimSpace(answer))
				if answer != "y" && answer != "yes" {
					fmt.Fprintln(app.Stdout, "Aborted")
					return exitStatus(1)
				}
			}
			return app.Store.UpdateFreeing(func(inv *state.Inventory) error {
				app.RT.Reconcile(inv) // `delete -a -f` ends a CI job: leave no orphan init
				for _, name := range targets {
					m := inv.ByName(name)
					if m == nil {
						return notFound(name)
					}
					if err := app.RT.Stop(m); err != nil {
						return rpcErrorf("delete '%s': %v", name, err)
					}
					inv.Remove(m.ID)
					if err := app.RT.Remove(m); err != nil {
						return rpcErrorf("delete '%s': %v", name, err)
					}
				}
				app.RT.RefreshHosts(inv)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Delete all machines")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Do not ask for confirmation")
	return cmd
}

// NewCmdStart is `orbctl start` (§2).
func NewCmdStart(app *App) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "start [flags] [ID/NAME]...",
		Short: "Start OrbStack or a machine",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !all {
				wasRunning := false
				app.Store.View(func(inv *state.Inventory) error { wasRunning = app.vmRunning(inv); return nil })
				if err := app.ensureVM(); err != nil {
					return err
				}
				if wasRunning {
					fmt.Fprintln(app.Stderr, "OrbStack is already running. Docker engine is ready to use.\nUse --all to start all machines.")
				}
				return nil
			}
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.Update(func(inv *state.Inventory) error {
				ms := inv.Machines
				if !all {
					var err error
					if ms, err = resolveAll(inv, args); err != nil {
						return err
					}
				}
				app.RT.Reconcile(inv)
				for _, m := range ms {
					if err := app.RT.Start(m); err != nil {
						app.RT.RefreshHosts(inv)
						return rpcErrorf("start '%s': %v", m.Name, err)
					}
				}
				app.RT.RefreshHosts(inv)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Start all machines")
	return cmd
}

// NewCmdStop is `orbctl stop` (§2). With no names it stops everything.
func NewCmdStop(app *App) *cobra.Command {
	var all, force bool
	cmd := &cobra.Command{
		Use:     "stop [flags] [ID/NAME]..",
		Aliases: []string{"shutdown"},
		Short:   "Stop OrbStack or a machine",
		RunE: func(cmd *cobra.Command, args []string) error {
			// stop never auto-starts OrbStack (§1).
			return app.Store.UpdateFreeing(func(inv *state.Inventory) error {
				if !app.vmRunning(inv) {
					fmt.Fprintln(app.Stderr, "OrbStack is not running")
					return nil
				}
				whole := len(args) == 0 && !all
				if whole || all {
					app.RT.Reconcile(inv)
				}
				ms := inv.Machines
				if len(args) > 0 {
					var err error
					if ms, err = resolveAll(inv, args); err != nil {
						return err
					}
				}
				for _, m := range ms {
					if err := app.RT.Stop(m); err != nil {
						return rpcErrorf("stop '%s': %v", m.Name, err)
					}
				}
				if whole {
					inv.VMStopped = true
				}
				app.RT.RefreshHosts(inv)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Stop all machines")
	// -f force-stops the VM in OrbStack; every stop here is already final.
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force stop (only without machine names)")
	return cmd
}

// NewCmdRestart is `orbctl restart` (§2).
func NewCmdRestart(app *App) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "restart [flags] [ID/NAME]..",
		Short: "Restart a machine",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !all {
				return fmt.Errorf("no machines specified")
			}
			return app.Store.Update(func(inv *state.Inventory) error {
				if !app.vmRunning(inv) {
					fmt.Fprintln(app.Stderr, "OrbStack is not running")
					return nil
				}
				ms := inv.Machines
				if !all {
					var err error
					if ms, err = resolveAll(inv, args); err != nil {
						return err
					}
				}
				app.RT.Reconcile(inv)
				for _, m := range ms {
					if err := app.RT.Stop(m); err != nil {
						return rpcErrorf("restart '%s': %v", m.Name, err)
					}
					if err := app.RT.Start(m); err != nil {
						app.RT.RefreshHosts(inv)
						return rpcErrorf("restart '%s': %v", m.Name, err)
					}
				}
				app.RT.RefreshHosts(inv)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Restart all machines")
	return cmd
}
