package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// NewCmdConfig builds `config get|set`.
func NewCmdConfig(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and change OrbStack settings",
		Long: `Read and change OrbStack settings through "orbctl config". Keys are OrbStack's,
e.g. cpu, memory_mib, machine.NAME.username, and on OrbStack 2.x
machine.NAME.cpu, machine.NAME.memory_mib, machine.NAME.disk_bytes.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "get KEY",
		Short:   "Print one setting's value",
		Long:    `Print one setting's value ("orbctl config get KEY"). An unknown key is exit status 2.`,
		Example: `  pyinfra-orbstack config get cpu`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				v, err := c.ConfigGet(cmd.Context(), a[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(f.Out, v)
				return nil
			})
		},
	}, &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change one setting",
		Long: `Change one setting ("orbctl config set KEY VALUE"). Some settings (cpu,
memory_mib, network ones) apply only after OrbStack restarts.`,
		Example: `  pyinfra-orbstack config set machine.web.memory_mib 2048`,
		Args:    args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				return c.ConfigSet(cmd.Context(), a[0], a[1])
			})
		},
	})
	return cmd
}
