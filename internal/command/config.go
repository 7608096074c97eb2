package command

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// restartKeys are the global settings of OrbStack's VM itself: they apply only
// after OrbStack restarts (orbctl says so too, on stdout, which we do not show).
var restartKeys = map[string]bool{
	"cpu": true, "memory_mib": true, "rosetta": true, "network_proxy": true,
	"network_bridge": true, "network.https": true, "network.subnet4": true,
	"mount_hide_shared": true, "data_dir": true,
}

// NewCmdConfig builds `config get|set`.
func NewCmdConfig(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and change OrbStack settings",
		Long: `Read and change OrbStack settings through "orbctl config". Keys are OrbStack's,
e.g. cpu, memory_mib, machine.NAME.username, and on OrbStack 2.x
machine.NAME.cpu, machine.NAME.memory_mib, machine.NAME.disk_bytes.

Exit statuses: 0 ok, 1 other failure, 2 unknown key or bad usage, 3 the machine
in a machine.NAME.* key does not exist, 6 orbctl not found.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "get KEY",
		Short: "Print one setting's value",
		Long: `Print one setting's value ("orbctl config get KEY"). An unknown key is exit
status 2. OrbStack 1.11.3's config get printed every setting: the KEY's line is
picked out. Older OrbStack has no config get: use "orbctl config show".`,
		Example: `  pyinfra-orbstack config get cpu`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				v, err := configGet(cmd.Context(), c, a[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(f.Out, v)
				return nil
			})
		},
	}, &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change one setting, if it differs",
		Long: `Change one setting ("orbctl config set KEY VALUE") when its current value
differs, and say which happened on stdout: "set KEY to VALUE" or "KEY is
already VALUE" (both exit 0, so a script can run the same line every time).
Global VM settings (cpu, memory_mib, rosetta, network_proxy, network_bridge,
network.https, network.subnet4, mount_hide_shared, data_dir) apply only after
OrbStack restarts: changing one prints a note saying so on stderr. OrbStack is
not restarted for you (that stops every machine).`,
		Example: `  pyinfra-orbstack config set machine.web.memory_mib 2048
  pyinfra-orbstack config set cpu 4 && orbctl stop && orbctl start`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				return setIfDifferent(cmd.Context(), f, c, a[0], a[1])
			})
		},
	})
	return cmd
}

// setIfDifferent sets key to value unless `config get` already reports it.
// When config get cannot answer (OrbStack before 1.11.3, a key it does not
// list), it sets the key and lets orbctl judge it.
func setIfDifferent(ctx context.Context, f *Factory, c *orbctl.Client, key, value string) error {
	if current, err := configGet(ctx, c, key); err == nil && current == value {
		fmt.Fprintf(f.Out, "%s is already %s\n", key, value)
		return nil
	}
	if err := c.ConfigSet(ctx, key, value); err != nil {
		return err
	}
	fmt.Fprintf(f.Out, "set %s to %s\n", key, value)
	if restartKeys[key] {
		fmt.Fprintf(f.Err, "note: OrbStack must restart to apply %s: run \"orbctl stop\" then \"orbctl start\" (this stops every machine)\n", key)
	}
	return nil
}

// configGet is ConfigGet made to work on the OrbStack versions that differ:
// 1.11.3's `config get` ignored KEY and printed every "key: value" line, and
// before 1.11.3 there was no `config get` at all.
func configGet(ctx context.Context, c *orbctl.Client, key string) (string, error) {
	out, err := c.ConfigGet(ctx, key)
	if err != nil {
		if strings.Contains(err.Error(), `unknown command "get"`) {
			return "", &orbctl.Error{Kind: orbctl.ErrFailed, Args: []string{"config", "get", key},
				Message: "this OrbStack has no \"orbctl config get\" (added in 1.11.3): read " + key + " in \"orbctl config show\""}
		}
		return "", err
	}
	if !strings.Contains(out, "\n") {
		return out, nil
	}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", &orbctl.Error{Kind: orbctl.ErrBadArgument, Args: []string{"config", "get", key},
		Message: "Unknown configuration key: " + key + " (not in orbctl's list of settings)"}
}
