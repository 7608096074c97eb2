package command

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// NewCmdLimits builds `limits`.
func NewCmdLimits(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "limits",
		Short: "Print OrbStack's resource limits and each machine's disk size",
		Long: `Print OrbStack's limits: the VM's CPUs and memory (config cpu, memory_mib) and,
per machine, its disk size (orbctl info) and its own limits (OrbStack 2.1+:
machine.NAME.cpu, memory_mib, disk_bytes). With --json, sizes are bytes and a
limit that is not set is null. Reads orbctl config show and list once, and info
per machine.`,
		Example: `  pyinfra-orbstack limits
  pyinfra-orbstack limits --json | jq '.machines[] | {name, disk_size}'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				l, err := c.ResourceLimits(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(f, l)
				}
				fmt.Fprintf(f.Out, "OrbStack: %s CPUs, %s memory\n", orNone(l.CPUs), bytesOrNone(l.MemoryBytes))
				tw := tabwriter.NewWriter(f.Out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "MACHINE\tSTATE\tDISK SIZE\tCPU LIMIT\tMEMORY LIMIT\tDISK LIMIT")
				for _, m := range l.Machines {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, bytesOrNone(m.DiskSize),
						orNone(m.CPUs), bytesOrNone(m.MemoryBytes), bytesOrNone(m.DiskBytes))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orNone(n *int) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprint(*n)
}

// bytesOrNone prints a size in binary units, as OrbStack's own settings read.
func bytesOrNone(n *uint64) string {
	if n == nil {
		return "-"
	}
	v, units := float64(*n), []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", *n)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
