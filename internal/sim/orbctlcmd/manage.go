//go:build linux

package orbctlcmd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/distro"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/guest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// copyPaths applies §7's path rules.
type copyPaths struct {
	cwd, home string // the caller's ("Mac") cwd and $HOME
}

func newCopyPaths() copyPaths {
	cwd, _ := os.Getwd()
	home, _ := os.UserHomeDir()
	return copyPaths{cwd: cwd, home: home}
}

// mac makes a host path absolute against the cwd and translates it.
func (c copyPaths) mac(p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.cwd, p)
	}
	return macPath(p)
}

// linux rewrites a path under the Mac $HOME to a Linux-home-relative one;
// other paths stay (relative ones are relative to the Linux home).
func (c copyPaths) linux(p string) string {
	if c.home != "" && c.home != "/" && (p == c.home || strings.HasPrefix(p, c.home+"/")) {
		return "." + strings.TrimPrefix(p, c.home)
	}
	return p
}

// copyAccess is how push/pull reach a machine at this version (§7, §10):
// before 2.2.3 cp runs with the default user's own write permissions, from
// 2.2.3 a destination the user cannot write works too (GH#406, #407);
// isolated machines have no /mnt/mac, and OrbStack copies into them only
// from 2.2.0 (GH#2469). How 2.2.x does either is not recorded: we give cp
// CAP_DAC_OVERRIDE and, for isolated machines, the host's files at a path
// only the cp process can see (guest.HostRootPath).
type copyAccess struct {
	writeAny bool
	hostRoot bool // the machine is isolated and the version copies into it
}

func (a *App) copyAccess(key string, keySet bool) copyAccess {
	isolated := false
	a.Store.View(func(inv *state.Inventory) error {
		m := inv.ByKey(key)
		if !keySet {
			m = inv.ByID(inv.DefaultID)
		}
		isolated = m != nil && m.Isolated
		return nil
	})
	return copyAccess{writeAny: a.Version.AtLeast(2, 2, 3), hostRoot: isolated && a.Version.AtLeast(2, 2, 0)}
}

// host is where the copy reaches host path p (absolute against the cwd).
func (c copyPaths) host(p string, acc copyAccess) string {
	if !acc.hostRoot {
		return c.mac(p)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.cwd, p)
	}
	return guest.HostRootPath + p
}

// NewCmdPush is `orbctl push` (§7): cp -rf in the machine as the default user.
func NewCmdPush(app *App) *cobra.Command {
	var machine string
	cmd := &cobra.Command{
		Use:   "push [flags] macOS-source... [Linux-dest]",
		Short: "Copy files from macOS to Linux",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := newCopyPaths()
			keySet := cmd.Flags().Changed("machine")
			acc := app.copyAccess(machine, keySet)
			srcs, dest := args, "."
			if len(args) >= 2 {
				srcs, dest = args[:len(args)-1], p.linux(args[len(args)-1])
			}
			cpArgs := []string{"cp", "-rf"}
			for _, s := range srcs {
				if acc.hostRoot {
					// cp would name the fd path; say it as cp says it for
					// the path the user gave.
					if _, err := os.Lstat(strings.TrimPrefix(p.host(s, acc), guest.HostRootPath)); err != nil {
						fmt.Fprintf(app.Stderr, "cp: cannot stat '%s': No such file or directory\n", p.mac(s))
						return exitStatus(1)
					}
				}
				cpArgs = append(cpArgs, p.host(s, acc))
			}
			cpArgs = append(cpArgs, dest)
			// ReadAny: on a Mac the Linux user can read the user's Mac files;
			// here it gets CAP_DAC_READ_SEARCH for the copy (see docs).
			spec := guest.ExecSpec{Args: cpArgs, Direct: true, ReadAny: true, WriteAny: acc.writeAny, HostRoot: acc.hostRoot}
			return app.runIn(machine, keySet, spec)
		},
	}
	cmd.Flags().StringVarP(&machine, "machine", "m", "", "Copy to a specific machine")
	return cmd
}

// NewCmdPull is `orbctl pull` (§7).
func NewCmdPull(app *App) *cobra.Command {
	var machine string
	cmd := &cobra.Command{
		Use:   "pull [flags] Linux-source... [macOS-dest]",
		Short: "Copy files from Linux to macOS",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := newCopyPaths()
			keySet := cmd.Flags().Changed("machine")
			acc := app.copyAccess(machine, keySet)
			srcs, dest := args, "."
			if len(args) >= 2 {
				srcs, dest = args[:len(args)-1], args[len(args)-1]
			}
			cpArgs := []string{"cp", "-rf"}
			for _, s := range srcs {
				cpArgs = append(cpArgs, p.linux(s))
			}
			cpArgs = append(cpArgs, p.host(dest, acc))
			// WriteAny: the Linux user may write the Mac files (CAP_DAC_OVERRIDE).
			spec := guest.ExecSpec{Args: cpArgs, Direct: true, WriteAny: true, HostRoot: acc.hostRoot}
			return app.runIn(machine, keySet, spec)
		},
	}
	cmd.Flags().StringVarP(&machine, "machine", "m", "", "Copy from a specific machine")
	return cmd
}

// dockerMachineID is OrbStack's builtin docker machine (§3.1). It is never
// listed, and the simulator has no Docker, so only the errors of §5 that
// name builtins are modelled. The reference lists those messages without the
// "[-32098] " prefix, but they come from the server like every other check
// on records, so we print the prefix (our reading; unconfirmed).
const dockerMachineID = "01GQQVF6C60000000000DOCKER"

func isBuiltin(key string) bool { return key == "docker" || key == dockerMachineID }

// NewCmdClone is `orbctl clone` (§2): the copy is stopped.
func NewCmdClone(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "clone [OLD_NAME] [NEW_NAME]",
		Short: "Clone a machine",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.Update(func(inv *state.Inventory) error {
				if isBuiltin(args[0]) {
					return rpcErrorf("cannot clone builtin machine")
				}
				src := inv.ByKey(args[0])
				if src == nil {
					return notFound(args[0])
				}
				if inv.ByName(args[1]) != nil {
					return rpcErrorf("machine already exists: '%s'", args[1])
				}
				if !distro.ValidName(args[1]) {
					return rpcErrorf("%s", distro.InvalidNameMessage(args[1]))
				}
				dst := *src
				dst.ID, dst.Name, dst.Init, dst.IP4, dst.Relay4 = state.NewULID(), args[1], state.Process{}, "", ""
				resume := app.RT.Pause(src) // OrbStack pauses the source (§2)
				err := app.RT.Clone(src, &dst)
				resume()
				if err != nil {
					app.RT.Remove(&dst)
					return rpcErrorf("clone '%s': %v", src.Name, err)
				}
				app.RT.SetHostname(&dst)
				inv.Machines = append(inv.Machines, &dst)
				return nil
			})
		},
	}
}

// NewCmdRename is `orbctl rename` (§2): the ULID stays.
func NewCmdRename(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "rename [old name/ID] [new name]",
		Short: "Rename a machine",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.Update(func(inv *state.Inventory) error {
				if isBuiltin(args[0]) {
					return rpcErrorf("cannot rename builtin machine")
				}
				m := inv.ByKey(args[0])
				if m == nil {
					return notFound(args[0])
				}
				if m.Name == args[1] {
					return nil
				}
				if inv.ByName(args[1]) != nil {
					return rpcErrorf("machine '%q' already exists", args[1])
				}
				if !distro.ValidName(args[1]) {
					return rpcErrorf("%s", distro.InvalidNameMessage(args[1]))
				}
				m.Name = args[1]
				app.RT.SetHostname(m)
				app.RT.RefreshHosts(inv)
				return nil
			})
		},
	}
}

// NewCmdExport is `orbctl export` (§2). The archive is a tar of the
// machine's record and layer (not OrbStack's zstd format).
func NewCmdExport(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "export [MACHINE_NAME] [OUTPUT_PATH]",
		Short: "Export a machine to a file",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.View(func(inv *state.Inventory) error {
				m := inv.ByKey(args[0])
				if m == nil {
					return notFound(args[0])
				}
				resume := app.RT.Pause(m) // a consistent copy, as for clone
				err := app.RT.Export(m, out)
				resume()
				if err != nil {
					return rpcErrorf("export '%s': %v", m.Name, err)
				}
				return nil
			})
		},
	}
}

// NewCmdImport is `orbctl import` (§2): a stopped machine with the
// archive's files.
func NewCmdImport(app *App) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import [INPUT_PATH]",
		Short: "Import a machine from a file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.Update(func(inv *state.Inventory) error {
				fresh := &state.Machine{ID: state.NewULID()}
				old, err := app.RT.Import(in, fresh)
				if err != nil {
					return rpcErrorf("import: %v", err)
				}
				m := *old
				m.ID, m.Init, m.IP4, m.Relay4 = fresh.ID, state.Process{}, "", ""
				if name != "" {
					m.Name = name
				}
				fail := func(err error) error { app.RT.Remove(&m); return err }
				if !distro.ValidName(m.Name) {
					return fail(rpcErrorf("%s", distro.InvalidNameMessage(m.Name)))
				}
				if inv.ByName(m.Name) != nil {
					return fail(rpcErrorf("machine already exists: '%s'", m.Name))
				}
				app.RT.SetHostname(&m)
				inv.Machines = append(inv.Machines, &m)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "Name of the imported machine")
	return cmd
}

// NewCmdDefault is `orbctl default` (§2).
func NewCmdDefault(app *App) *cobra.Command {
	return &cobra.Command{
		Use:     "default [NAME/ID]",
		Aliases: []string{"set-default", "get-default"},
		Short:   "Get or set the default machine",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.Update(func(inv *state.Inventory) error {
				if len(args) == 0 {
					m := defaultMachine(inv)
					if m == nil {
						return rpcErrorf("no machines found")
					}
					fmt.Fprintln(app.Stdout, m.Name)
					return nil
				}
				if args[0] == "none" && app.Version.AtLeast(2, 0, 0) {
					inv.DefaultID = "" // [MACHU]: 2.x clears the default this way
					return nil
				}
				m := inv.ByKey(args[0])
				if m == nil {
					return notFound(args[0])
				}
				inv.DefaultID = m.ID
				return nil
			})
		},
	}
}

// NewCmdLogs is `orbctl logs` (§2): errors are printed yet exit 0.
func NewCmdLogs(app *App) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "logs [ID/NAME]",
		Aliases: []string{"log", "console"},
		Short:   "Show a machine's logs",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := app.ensureVM(); err != nil {
				return err
			}
			return app.Store.View(func(inv *state.Inventory) error {
				m := inv.ByKey(args[0])
				if m == nil {
					fmt.Fprintln(app.Stdout, notFound(args[0]).Error()) // red.Println: stdout, exit 0
					return nil
				}
				b, err := os.ReadFile(app.RT.ConsoleLog(m))
				if err != nil {
					fmt.Fprintln(app.Stdout, err)
					return nil
				}
				if all {
					fmt.Fprintf(app.Stdout, "--- runtime log (orbsim) ---\nmachine %s (%s), state %s\n--- console ---\n", m.Name, m.ID, m.StateWord())
				}
				app.Stdout.Write(b)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Show runtime logs as well as the console")
	return cmd
}

// runUserData runs a shell-script user-data (-c) once as root, standing in
// for cloud-init's handling of "#!" user data. Output goes to the console log.
func (a *App) runUserData(m *state.Machine) error {
	cur, err := a.target(m.Name, true)
	if err != nil {
		return err
	}
	log, err := os.OpenFile(a.RT.ConsoleLog(cur), os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	spec := guest.ExecSpec{User: "root", Workdir: "/", Args: []string{"/bin/sh", "-c", m.UserData}, Direct: true}
	cmd, err := a.RT.Command(cur, spec)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = log, &out
	if err := cmd.Run(); err != nil {
		log.Write(out.Bytes())
		return rpcErrorf("create '%s': cloud-init user data failed: %v", m.Name, err)
	}
	return nil
}

// promptPassword asks like `create -p` does, without echo on a terminal.
// Without a terminal it reads one line from stdin.
func (a *App) promptPassword() (string, error) {
	fmt.Fprint(a.Stderr, "Password for Linux user: ")
	fd := int(a.Stdin.Fd())
	if old, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		quiet := *old
		quiet.Lflag &^= unix.ECHO
		unix.IoctlSetTermios(fd, unix.TCSETS, &quiet)
		defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
		defer fmt.Fprintln(a.Stderr)
	}
	line, err := bufio.NewReader(a.Stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" && err != nil {
		return "", fmt.Errorf("no password given")
	}
	return line, nil
}

// setPassword sets the default user's password with chpasswd inside the
// machine (the password travels on stdin, never in argv or logs).
func (a *App) setPassword(m *state.Machine, password string) error {
	cur, err := a.target(m.Name, true)
	if err != nil {
		return err
	}
	cmd, err := a.RT.Command(cur, guest.ExecSpec{User: "root", Workdir: "/", Args: []string{"chpasswd"}, Direct: true})
	if err != nil {
		return err
	}
	cmd.Stdin = strings.NewReader(m.DefaultUser + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return rpcErrorf("create '%s': set password: %v: %s", m.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
