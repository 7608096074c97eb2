package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// NewCmdConfig builds `config get|set|show`.
func NewCmdConfig(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and change OrbStack settings",
		Long: `Read and change OrbStack settings through "orbctl config". Keys are OrbStack's,
e.g. cpu, memory_mib, machine.NAME.username, and on OrbStack 2.x
machine.NAME.cpu, machine.NAME.memory_mib, machine.NAME.disk_bytes.
With --machine NAME, KEY is one machine's setting (username, cpu, ...) and the
machine.NAME. prefix is added, quoted as orbctl expects when NAME has dots.

Exit statuses: 0 ok, 1 other failure, 2 unknown key or bad usage, 3 the machine
in a machine.NAME.* key does not exist, 6 orbctl not found.`,
	}
	var getMachine, setMachine string
	var getJSON, showJSON bool
	get := &cobra.Command{
		Use:   "get KEY...",
		Short: "Print settings' values",
		Long: `Print one setting's value ("orbctl config get KEY"). An unknown key is exit
status 2. OrbStack 1.11.3's config get printed every setting: the KEY's line is
picked out. Older OrbStack has no config get: use "orbctl config show".

With --json, every KEY is printed as one object, {"KEY": {"key": FULL_KEY,
"value": VALUE or null, "restart": BOOL}}: a key OrbStack does not know (or a
machine that does not exist) is null rather than an error, a key "config show"
lists is read from there on OrbStack before 1.11.3, and "restart" says whether
changing it takes an OrbStack restart. This is what the pyinfra facts read.`,
		Example: `  pyinfra-orbstack config get cpu
  pyinfra-orbstack config get --json --machine web cpu memory_mib`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if getMachine != "" && !orbctl.ValidName(getMachine) {
				return &usageError{cmd: cmd, err: fmt.Errorf("invalid machine name %q: %s", getMachine, orbctl.NameRule)}
			}
			if !getJSON && len(a) > 1 {
				return &usageError{cmd: cmd, err: errors.New("more than one KEY needs --json")}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				if !getJSON {
					v, err := c.ConfigGet(cmd.Context(), fullKey(getMachine, a[0]))
					if err != nil {
						return err
					}
					fmt.Fprintln(f.Out, v)
					return nil
				}
				values, err := configValues(cmd.Context(), c, getMachine, a)
				if err != nil {
					return err
				}
				return printJSON(f, values)
			})
		},
	}
	get.Flags().StringVar(&getMachine, "machine", "", "read machine.NAME.KEY")
	get.Flags().BoolVar(&getJSON, "json", false, "print JSON: unknown keys are null, not errors")
	set := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change one setting, if it differs",
		Long: `Change one setting ("orbctl config set KEY VALUE") when its current value
differs, and say which happened on stdout: "set KEY to VALUE" or "KEY is
already VALUE" (both exit 0, so a script can run the same line every time).
Global VM settings (cpu, memory_mib, rosetta, network_proxy, network_bridge,
network.https, network.subnet4, mount_hide_shared, data_dir) apply only after
OrbStack restarts: changing one prints a note saying so on stderr. OrbStack is
not restarted for you (that stops every machine). Per-machine limits
(machine.NAME.cpu, .memory_mib, .disk_bytes, .mounts) need OrbStack 2.1 or
later: on an older one they are refused (exit 2) before orbctl runs.`,
		Example: `  pyinfra-orbstack config set machine.web.memory_mib 2048
  pyinfra-orbstack config set --machine web username deploy
  pyinfra-orbstack config set cpu 4 && orbctl stop && orbctl start`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if setMachine != "" && !orbctl.ValidName(setMachine) {
				return &usageError{cmd: cmd, err: fmt.Errorf("invalid machine name %q: %s", setMachine, orbctl.NameRule)}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				key := fullKey(setMachine, a[0])
				if flags := limitFlags([]orbctl.Setting{{Key: key}}); setMachine != "" && len(flags) > 0 {
					if err := c.RequireOrbStack21(cmd.Context(), flags); err != nil {
						return err
					}
				}
				return setIfDifferent(cmd.Context(), f, c, key, a[1])
			})
		},
	}
	set.Flags().StringVar(&setMachine, "machine", "", "set machine.NAME.KEY")
	show := &cobra.Command{
		Use:   "show",
		Short: "Print every setting",
		Long: `Print every setting "orbctl config show" lists, as "key: value" lines, or with
--json as one object of strings.`,
		Example: `  pyinfra-orbstack config show --json | jq -r .cpu`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				settings, err := c.ConfigShow(cmd.Context())
				if err != nil {
					return err
				}
				if showJSON {
					return printJSON(f, settings)
				}
				for _, k := range sortedKeys(settings) {
					fmt.Fprintf(f.Out, "%s: %s\n", k, settings[k])
				}
				return nil
			})
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	cmd.AddCommand(get, set, show)
	return cmd
}

// fullKey is KEY, or machine.NAME.KEY with a machine.
func fullKey(machine, key string) string {
	if machine == "" {
		return key
	}
	return orbctl.MachineKey(machine, key)
}

// ConfigValue is one setting as `config get --json` prints it.
type ConfigValue struct {
	Key     string  `json:"key"`
	Value   *string `json:"value"`
	Restart bool    `json:"restart"`
}

// configValues reads keys, absent ones as nil: from `config get` (the one
// source for per-machine keys), falling back to `config show` where
// `config get` cannot answer (OrbStack before 1.11.3, 1.11.3's listing).
func configValues(ctx context.Context, c *orbctl.Client, machine string, keys []string) (map[string]ConfigValue, error) {
	out := map[string]ConfigValue{}
	var shown map[string]string
	for _, k := range keys {
		key := fullKey(machine, k)
		v := ConfigValue{Key: key, Restart: machine == "" && orbctl.NeedsRestart(k)}
		value, err := c.ConfigGet(ctx, key)
		switch {
		case err == nil:
			v.Value = &value
		case errors.Is(err, orbctl.ErrBadArgument), errors.Is(err, orbctl.ErrMachineNotFound):
			// unknown key, or a machine that does not exist yet: absent
		case errors.Is(err, orbctl.ErrFailed):
			if shown == nil {
				if shown, err = c.ConfigShow(ctx); err != nil {
					return nil, err
				}
			}
			if s, ok := shown[key]; ok {
				v.Value = &s
			}
		default:
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// setIfDifferent sets key to value unless `config get` already reports it.
// When config get cannot answer (OrbStack before 1.11.3, a key it does not
// list), it sets the key and lets orbctl judge it.
func setIfDifferent(ctx context.Context, f *Factory, c *orbctl.Client, key, value string) error {
	if current, err := c.ConfigGet(ctx, key); err == nil && current == value {
		fmt.Fprintf(f.Out, "%s is already %s\n", key, value)
		return nil
	}
	if err := c.ConfigSet(ctx, key, value); err != nil {
		return err
	}
	fmt.Fprintf(f.Out, "set %s to %s\n", key, value)
	if orbctl.NeedsRestart(key) {
		fmt.Fprintf(f.Err, "note: OrbStack must restart to apply %s: run \"orbctl stop\" then \"orbctl start\" (this stops every machine)\n", key)
	}
	return nil
}
