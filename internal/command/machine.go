package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// NewCmdMachine builds `machine` and its lifecycle subcommands.
func NewCmdMachine(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "machine",
		Short: "Create, start, stop and remove OrbStack machines from scripts",
		Long: `Manage OrbStack machines the way the @orbstack connector does, for scripts and
CI pipelines that do not use pyinfra.

Commands that leave a machine running (create, start, restart) return only once
it answers a command ("orbctl run -m NAME true"), or fail with exit status 5
after --timeout. Nothing that is unsafe to repeat is ever retried. Machines are
always addressed by name: "orbctl delete" with an ID crashes orbctl, and
"orbctl stop" without a name would stop all of OrbStack.

Exit statuses: 0 ok, 1 other failure, 2 bad usage or argument, 3 machine not
found, 4 machine already exists, 5 not ready in time, 6 orbctl not found,
7 OrbStack not running, 8 another Mac not reachable over ssh or without
pyinfra-orbstack (migrate, where).`,
	}
	cmd.AddCommand(
		newCmdMachineCreate(f),
		newCmdMachineDelete(f),
		newCmdMachineStart(f),
		newCmdMachineStop(f),
		newCmdMachineRestart(f),
		newCmdMachineClone(f),
		newCmdMachineRename(f),
		newCmdMachineExport(f),
		newCmdMachineImport(f),
		newCmdMachineInfo(f),
		newCmdMachineSettings(f),
		newCmdMachineDiff(f),
		newCmdMachineLogs(f),
		newCmdMachineDefault(f),
		newCmdMachineMigrate(f),
		newCmdMachineWhere(f),
		newCmdMachineExportStream(f),
		newCmdMachineImportStream(f),
	)
	return cmd
}

// withOrbctl runs fn with a driver, failing early when orbctl is missing.
func withOrbctl(f *Factory, fn func(c *orbctl.Client) error) error {
	c, err := f.Orbctl()
	if err != nil {
		return err
	}
	return fn(c)
}

func addTimeoutFlag(cmd *cobra.Command, timeout *time.Duration) {
	cmd.Flags().DurationVar(timeout, "timeout", orbctl.DefaultReadyTimeout, "how long starting and answering commands may take")
	// Checked before anything runs: found after a create, it would leave a
	// machine behind and fail anyway.
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if *timeout <= 0 {
			return &usageError{cmd: cmd, err: fmt.Errorf("--timeout must be positive, got %s", *timeout)}
		}
		return nil
	}
}

func newCmdMachineCreate(f *Factory) *cobra.Command {
	var arch, user, memory, disk, userData string
	var cpus int
	var isolated, isolateNetwork, existsOK bool
	var mounts []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create DISTRO[:VERSION] NAME",
		Short: "Create a machine and wait until it answers commands",
		Long: `Create a machine from an OrbStack image ("orbctl create") and wait until it
answers commands. An existing NAME is an error (exit status 4) and the machine
is left alone, unless --exists-ok is given: then an existing machine (whatever
its image) is started if needed, waited for and reported with its image, so a
CI job can run the same line every time.

--cpus, --memory and --disk (OrbStack 2.1+) are passed to "orbctl create" for a
new machine. On an existing machine (--exists-ok) they are set through "orbctl
config set machine.NAME.cpu|memory_mib|disk_bytes", only those that differ.

--user-data (cloud-init, run on first boot), --isolated, --isolate-network and
--mount (OrbStack 2.1+; mounts need --isolated) apply only when the machine is
created; an existing machine keeps what it has, and a note says so.`,
		Example: `  pyinfra-orbstack machine create debian:bookworm web
  pyinfra-orbstack machine create --arch amd64 --user deploy ubuntu:noble ci-runner
  pyinfra-orbstack machine create --exists-ok --cpus 2 --memory 4G debian:bookworm ci
  pyinfra-orbstack machine create --isolated --mount "$PWD:/src" --user-data cloud-init.yml ubuntu sandbox`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			image, name := a[0], a[1]
			limits, err := orbctl.ParseLimits(cpus, memory, disk)
			if err != nil {
				return &usageError{cmd: cmd, err: errors.New("--" + err.Error())}
			}
			opts := orbctl.CreateOptions{Image: image, Name: name, Arch: arch, User: user,
				Isolated: isolated, IsolateNetwork: isolateNetwork, Mounts: mounts}
			if userData != "" {
				if opts.UserData, err = userDataFile(userData); err != nil {
					return &usageError{cmd: cmd, err: err}
				}
			}
			limits.ApplyTo(&opts)
			if err := orbctl.CheckCreate(opts); err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				ctx := cmd.Context()
				err := c.Create(ctx, opts)
				existed := existsOK && errors.Is(err, orbctl.ErrMachineExists)
				if err != nil && !existed {
					return err
				}
				var start func(context.Context, string) error
				if existed {
					// A new machine got its limits from create; an old one
					// gets those that differ.
					limits.Mounts = nil // fixed at creation: reported in the note below
					if err := setLimits(ctx, f, c, limits.Settings(name)); err != nil {
						return err
					}
					var kept []string
					for _, fl := range []string{"user-data", "isolated", "isolate-network", "mount"} {
						if cmd.Flags().Changed(fl) {
							kept = append(kept, "--"+fl)
						}
					}
					if len(kept) > 0 {
						fmt.Fprintf(f.Err, "note: %s apply only when a machine is created; %s already exists and keeps its own\n", strings.Join(kept, ", "), name)
					}
					start = c.Start // create starts a new machine; an old one may be stopped
				}
				if err := c.StartAndWait(ctx, name, timeout, start); err != nil {
					return err
				}
				if !existed {
					fmt.Fprintf(f.Out, "created %s\n", name)
					return nil
				}
				m, err := c.Info(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "%s already exists (%s:%s, %s) and is running\n", name, m.Distro, m.Version, m.Arch)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&arch, "arch", "a", "", "CPU architecture (arm64 or amd64; default: the Mac's)")
	cmd.Flags().StringVarP(&user, "user", "u", "", "default user to create (default: your macOS user name)")
	cmd.Flags().BoolVar(&existsOK, "exists-ok", false, "succeed when NAME exists: start it if needed and wait")
	cmd.Flags().IntVar(&cpus, "cpus", 0, "CPU limit (OrbStack 2.1+; 0 = leave as is)")
	cmd.Flags().StringVar(&memory, "memory", "", "memory limit, e.g. 4G or 2048M (OrbStack 2.1+)")
	cmd.Flags().StringVar(&disk, "disk", "", "disk limit, e.g. 32G (OrbStack 2.1+)")
	cmd.Flags().StringVarP(&userData, "user-data", "c", "", "cloud-init user-data FILE, run on first boot (new machines only)")
	cmd.Flags().BoolVar(&isolated, "isolated", false, "share no files with macOS (OrbStack 2.1+; new machines only)")
	cmd.Flags().BoolVar(&isolateNetwork, "isolate-network", false, "no network access to macOS and other machines (OrbStack 2.1+; new machines only)")
	cmd.Flags().StringArrayVar(&mounts, "mount", nil, "mount a Mac folder, HOST:GUEST; repeatable; needs --isolated (OrbStack 2.1+; new machines only)")
	addTimeoutFlag(cmd, &timeout)
	return cmd
}

// userDataFile checks --user-data before anything is created and makes it
// absolute (orbctl would read a relative path against its own directory).
func userDataFile(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("--user-data %s: not a readable file (a cloud-init user-data file, e.g. a #cloud-config YAML or a #! script)", path)
	}
	return abs, nil
}

// setLimits sets the settings whose current value differs, saying so on stdout.
func setLimits(ctx context.Context, f *Factory, c *orbctl.Client, settings []orbctl.Setting) error {
	if len(settings) > 0 {
		// Before 2.1 there are no per-machine limits to set.
		if err := c.RequireOrbStack21(ctx, limitFlags(settings)); err != nil {
			return err
		}
	}
	for _, s := range settings {
		if err := setIfDifferent(ctx, f, c, s.Key, s.Value); err != nil {
			return err
		}
	}
	return nil
}

// limitFlags names settings by the create flags that set them, for messages.
func limitFlags(settings []orbctl.Setting) []string {
	flags := make([]string, 0, len(settings))
	for _, s := range settings {
		switch {
		case strings.HasSuffix(s.Key, ".cpu"):
			flags = append(flags, "--cpus")
		case strings.HasSuffix(s.Key, ".memory_mib"):
			flags = append(flags, "--memory")
		case strings.HasSuffix(s.Key, ".disk_bytes"):
			flags = append(flags, "--disk")
		case strings.HasSuffix(s.Key, ".mounts"):
			flags = append(flags, "--mount")
		}
	}
	return flags
}

func newCmdMachineDelete(f *Factory) *cobra.Command {
	var missingOK bool
	cmd := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete machines by name, without asking",
		Long: `Delete machines and all their data ("orbctl delete -f"). Each NAME is looked up
first and deleted by its name. A missing machine is an error (exit status 3)
unless --missing-ok is given. Machines are deleted in order; the first failure
stops the command.`,
		Example: `  pyinfra-orbstack machine delete web
  pyinfra-orbstack machine delete --missing-ok ci-runner-1 ci-runner-2`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				for _, name := range a {
					err := c.Delete(cmd.Context(), name)
					if errors.Is(err, orbctl.ErrMachineNotFound) && missingOK {
						fmt.Fprintf(f.Out, "%s does not exist\n", name)
						continue
					}
					if err != nil {
						return err
					}
					fmt.Fprintf(f.Out, "deleted %s\n", name)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&missingOK, "missing-ok", false, "succeed when a machine does not exist")
	return cmd
}

func newCmdMachineStart(f *Factory) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a machine and wait until it answers commands",
		Long: `Start a machine ("orbctl start NAME"; a running machine is left as it is) and
wait until it answers commands.`,
		Example: `  pyinfra-orbstack machine start web
  pyinfra-orbstack machine start --timeout 30s web || orbctl logs web`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				if err := c.StartAndWait(cmd.Context(), a[0], timeout, c.Start); err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "%s is running\n", a[0])
				return nil
			})
		},
	}
	addTimeoutFlag(cmd, &timeout)
	return cmd
}

func newCmdMachineStop(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Stop one machine",
		Long: `Stop one machine ("orbctl stop NAME"). A stopped machine stays stopped. A name
is required: orbctl itself would stop all of OrbStack without one.`,
		Example: `  pyinfra-orbstack machine stop web`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				// orbctl exits 0 for an unknown name when OrbStack is stopped;
				// looking the machine up first makes a typo an error.
				if _, err := c.Info(cmd.Context(), a[0]); err != nil {
					return err
				}
				if err := c.Stop(cmd.Context(), a[0]); err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "%s is stopped\n", a[0])
				return nil
			})
		},
	}
}

func newCmdMachineRestart(f *Factory) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "restart NAME",
		Short:   "Restart a machine and wait until it answers commands",
		Long:    `Restart a machine ("orbctl restart NAME") and wait until it answers commands.`,
		Example: `  pyinfra-orbstack machine restart --timeout 90s web`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				if err := c.StartAndWait(cmd.Context(), a[0], timeout, c.Restart); err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "%s is running\n", a[0])
				return nil
			})
		},
	}
	addTimeoutFlag(cmd, &timeout)
	return cmd
}

func newCmdMachineClone(f *Factory) *cobra.Command {
	var start bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "clone SOURCE NEW_NAME",
		Short: "Copy a machine to a new, stopped machine",
		Long: `Copy a machine ("orbctl clone"). The copy is stopped unless --start is given,
in which case it is started and the command waits until it answers commands.
The source is paused while it is copied.`,
		Example: `  pyinfra-orbstack machine clone golden ci-runner-1 --start`,
		Args:    args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				if err := c.Clone(cmd.Context(), a[0], a[1]); err != nil {
					return err
				}
				if start {
					if err := c.StartAndWait(cmd.Context(), a[1], timeout, c.Start); err != nil {
						return err
					}
				}
				fmt.Fprintf(f.Out, "cloned %s to %s\n", a[0], a[1])
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&start, "start", false, "start the copy and wait until it answers commands")
	addTimeoutFlag(cmd, &timeout)
	return cmd
}

func newCmdMachineRename(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "rename NAME NEW_NAME",
		Short: "Rename a machine",
		Long: `Rename a machine ("orbctl rename"); it keeps its ID and its data. A NEW_NAME
that exists is exit status 4; a NAME that does not, exit status 3.`,
		Example: `  pyinfra-orbstack machine rename web web-old`,
		Args:    args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				if err := c.Rename(cmd.Context(), a[0], a[1]); err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "renamed %s to %s\n", a[0], a[1])
				return nil
			})
		},
	}
}

func newCmdMachineExport(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write a machine to an archive file",
		Long: `Write a machine to an archive ("orbctl export"), e.g. web.tar.zst. FILE is
relative to the current directory; its directory must exist (exit status 2
otherwise, before orbctl runs). An existing FILE is replaced, as orbctl does.`,
		Example: `  pyinfra-orbstack machine export web "backups/web-$(date -u +%Y%m%dT%H%M%SZ).tar.zst"`,
		Args:    args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			path, err := filepath.Abs(a[1])
			if err != nil {
				return err
			}
			if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
				return &usageError{err: fmt.Errorf("cannot write %s: directory %s does not exist (create it first)", path, filepath.Dir(path))}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				if err := c.Export(cmd.Context(), a[0], path); err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "exported %s to %s\n", a[0], path)
				return nil
			})
		},
	}
}

func newCmdMachineImport(f *Factory) *cobra.Command {
	var name string
	var start bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Create a machine from an archive file",
		Long: `Create a machine from an archive made by "machine export" ("orbctl import").
--name chooses its name; by default it keeps the exported name. The new machine
is stopped unless --start is given, in which case it is started and the command
waits until it answers commands. An existing name is exit status 4; a missing
FILE is exit status 2, before orbctl runs.`,
		Example: `  pyinfra-orbstack machine import --name web --start web.tar.zst`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			path, err := filepath.Abs(a[0])
			if err != nil {
				return err
			}
			if st, err := os.Stat(path); err != nil || st.IsDir() {
				return &usageError{err: fmt.Errorf("archive %s: not a readable file (make one with: pyinfra-orbstack machine export NAME FILE)", path)}
			}
			if start && name == "" {
				return &usageError{cmd: cmd, err: errors.New("--start needs --name: the archive does not tell us which machine it makes")}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				if err := c.Import(cmd.Context(), path, name); err != nil {
					return err
				}
				if start {
					if err := c.StartAndWait(cmd.Context(), name, timeout, c.Start); err != nil {
						return err
					}
				}
				fmt.Fprintf(f.Out, "imported %s\n", path)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "name of the new machine")
	cmd.Flags().BoolVar(&start, "start", false, "start the machine and wait until it answers commands (needs --name)")
	addTimeoutFlag(cmd, &timeout)
	return cmd
}

func newCmdMachineInfo(f *Factory) *cobra.Command {
	var asJSON, missingOK bool
	cmd := &cobra.Command{
		Use:   "info NAME",
		Short: "Show one machine",
		Long: `Show one machine as the @orbstack connector sees it. With --json the output is
the protocol's Machine object plus "config" (every key orbctl reported there),
the same on every OrbStack version. A missing machine is exit status 3, and
with --missing-ok prints "null" (with --json) or nothing, and exits 0.`,
		Example: `  pyinfra-orbstack machine info web
  pyinfra-orbstack machine info --json web | jq -r .state`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				m, err := c.Info(cmd.Context(), a[0])
				if missingOK && errors.Is(err, orbctl.ErrMachineNotFound) {
					if asJSON {
						fmt.Fprintln(f.Out, "null")
					}
					return nil
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(f, toJSON(m))
				}
				printMachines(f, []orbctl.Machine{m})
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().BoolVar(&missingOK, "missing-ok", false, "a missing machine is not an error")
	return cmd
}
