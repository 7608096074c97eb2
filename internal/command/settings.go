package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// SettingState is one wanted per-machine setting and its current value, as
// `machine settings --json` prints it.
type SettingState struct {
	Key     string  `json:"key"`
	Value   string  `json:"value"`
	Current *string `json:"current"`
}

func newCmdMachineSettings(f *Factory) *cobra.Command {
	var cpus int
	var memory, disk, user string
	var mounts []string
	cmd := &cobra.Command{
		Use:   "settings NAME",
		Short: "Compare a machine's settings with wanted ones",
		Long: `Print, as JSON, each wanted setting of an existing machine with its key, the
wanted value in OrbStack's units and the current one (null when OrbStack has
none): --cpus, --memory (e.g. 4G, or MiB), --disk (e.g. 32G, or bytes), --mount
(repeatable; --mount= alone for none) and --user (the default user). Nothing
is changed: the pyinfra operations read this to set only what differs, with
"pyinfra-orbstack config set KEY VALUE". Limits and mounts need OrbStack 2.1
or later (exit 2 before, saying so).`,
		Example: `  pyinfra-orbstack machine settings --cpus 2 --memory 4G web`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := a[0]
			if !orbctl.ValidName(name) {
				return &usageError{cmd: cmd, err: fmt.Errorf("invalid machine name %q: %s", name, orbctl.NameRule)}
			}
			limits, err := orbctl.ParseLimits(cpus, memory, disk)
			if err != nil {
				return &usageError{cmd: cmd, err: errors.New("--" + err.Error())}
			}
			if cmd.Flags().Changed("mount") {
				limits.Mounts = []string{}
				for _, m := range mounts {
					if m != "" {
						limits.Mounts = append(limits.Mounts, m)
					}
				}
			}
			wanted := limits.Settings(name)
			return withOrbctl(f, func(c *orbctl.Client) error {
				ctx := cmd.Context()
				if err := c.RequireOrbStack21(ctx, limitFlags(wanted)); err != nil {
					return err
				}
				if user != "" {
					wanted = append([]orbctl.Setting{{Key: orbctl.MachineKey(name, "username"), Value: user}}, wanted...)
				}
				states, err := settingStates(ctx, c, wanted)
				if err != nil {
					return err
				}
				return printJSON(f, states)
			})
		},
	}
	cmd.Flags().IntVar(&cpus, "cpus", 0, "wanted CPU limit")
	cmd.Flags().StringVar(&memory, "memory", "", "wanted memory limit, e.g. 4G (a plain number is MiB)")
	cmd.Flags().StringVar(&disk, "disk", "", "wanted disk limit, e.g. 32G (a plain number is bytes)")
	cmd.Flags().StringArrayVar(&mounts, "mount", nil, "wanted mount HOST:GUEST; repeatable; --mount= for none")
	cmd.Flags().StringVarP(&user, "user", "u", "", "wanted default user")
	return cmd
}

func settingStates(ctx context.Context, c *orbctl.Client, wanted []orbctl.Setting) ([]SettingState, error) {
	states := make([]SettingState, 0, len(wanted))
	for _, s := range wanted {
		state := SettingState{Key: s.Key, Value: s.Value}
		current, err := c.ConfigGet(ctx, s.Key)
		switch {
		case err == nil:
			state.Current = &current
		case errors.Is(err, orbctl.ErrBadArgument), errors.Is(err, orbctl.ErrMachineNotFound):
		default:
			return nil, err
		}
		states = append(states, state)
	}
	return states, nil
}

func newCmdMachineDefault(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "default [NAME]",
		Short: "Print or set the default machine",
		Long: `Without NAME, print the default machine (the one "orb" and "ssh orb" use), or
nothing when there are no machines. With NAME, make it the default.`,
		Example: `  pyinfra-orbstack machine default
  pyinfra-orbstack machine default web`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				if len(a) == 0 {
					name, err := c.Default(cmd.Context())
					if err != nil {
						return err
					}
					if name != "" {
						fmt.Fprintln(f.Out, name)
					}
					return nil
				}
				if err := c.SetDefault(cmd.Context(), a[0]); err != nil {
					return err
				}
				fmt.Fprintf(f.Out, "%s is the default machine\n", a[0])
				return nil
			})
		},
	}
}

func newCmdMachineDiff(f *Factory) *cobra.Command {
	var image, arch string
	var isolated, isolateNetwork bool
	cmd := &cobra.Command{
		Use:   "diff NAME",
		Short: "Say how an existing machine differs from a wanted image, arch and isolation",
		Long: `Print, as a JSON array, how an existing machine differs from the wanted --image
(DISTRO[:VERSION]), --arch, --isolated and --isolate-network, each as e.g.
"version bullseye (want bookworm)"; [] when it matches, and for a missing machine.
Versions are compared after OrbStack's alias resolution on both sides (debian:12
is bookworm, ubuntu:24.04 is noble) and regardless of case; a bare distro accepts
any version; a flag not given is not compared. These are what only recreating the
machine can change: the pyinfra operation orbstack.machine reads this.`,
		Example: `  pyinfra-orbstack machine diff --image debian:12 --arch amd64 web`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			w := orbctl.Wanted{Image: image, Arch: arch}
			if cmd.Flags().Changed("isolated") {
				w.Isolated = &isolated
			}
			if cmd.Flags().Changed("isolate-network") {
				w.IsolateNetwork = &isolateNetwork
			}
			if _, _, err := orbctl.ParseImage(image); image != "" && err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				m, err := c.Info(cmd.Context(), a[0])
				if errors.Is(err, orbctl.ErrMachineNotFound) {
					return printJSON(f, []string{})
				}
				if err != nil {
					return err
				}
				differences, err := orbctl.Differences(m, w)
				if err != nil {
					return err
				}
				if differences == nil {
					differences = []string{}
				}
				return printJSON(f, differences)
			})
		},
	}
	cmd.Flags().StringVar(&image, "image", "", "wanted DISTRO[:VERSION]")
	cmd.Flags().StringVarP(&arch, "arch", "a", "", "wanted architecture")
	cmd.Flags().BoolVar(&isolated, "isolated", false, "wanted isolation from macOS (true/false)")
	cmd.Flags().BoolVar(&isolateNetwork, "isolate-network", false, "wanted network isolation (true/false)")
	return cmd
}
