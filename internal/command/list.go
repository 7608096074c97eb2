package command

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/remote"
)

// ListOptions are list's flags.
type ListOptions struct {
	JSON bool
	Mac  remote.Mac // list --mac HOST: that Mac's machines, over ssh
}

// NewCmdList builds `list`.
func NewCmdList(f *Factory) *cobra.Command {
	opts := &ListOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List OrbStack machines as pyinfra sees them",
		Long: `List OrbStack's Linux machines with the facts pyinfra gets as host data.

Each machine is a pyinfra host: @orbstack/NAME targets one, @orbstack all of them.
Machines are sorted by name. With --json the output is an array of the
protocol's Machine objects, each with "config": every key orbctl reported under
config, whatever the OrbStack version.`,
		Example: `  pyinfra-orbstack list
  pyinfra-orbstack list --json | jq -r '.[] | select(.state == "running") | .name'
  pyinfra-orbstack list --json --mac mini-2`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkMac(cmd, opts.Mac); err != nil {
				return err
			}
			if !opts.Mac.IsLocal() {
				remoteArgs := []string{"list"}
				if opts.JSON {
					remoteArgs = append(remoteArgs, "--json")
				}
				return runOnMac(f, cmd, opts.Mac, remoteArgs...)
			}
			return listRun(cmd, f, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON instead of a table")
	addMacFlags(cmd, &opts.Mac)
	return cmd
}

func listRun(cmd *cobra.Command, f *Factory, opts *ListOptions) error {
	c, err := f.Orbctl()
	if err != nil {
		return err
	}
	machines, err := c.List(cmd.Context())
	if err != nil {
		return err
	}
	// orbctl lists in creation order; names are easier to scan.
	sort.Slice(machines, func(i, j int) bool { return machines[i].Name < machines[j].Name })
	if opts.JSON {
		out := make([]machineJSON, 0, len(machines))
		for _, m := range machines {
			out = append(out, toJSON(m))
		}
		return printJSON(f, out)
	}
	if len(machines) == 0 {
		fmt.Fprintln(f.Err, "No machines yet. Create one with: pyinfra-orbstack machine create debian NAME")
		return nil
	}
	printMachines(f, machines)
	return nil
}

func printMachines(f *Factory, machines []orbctl.Machine) {
	tw := tabwriter.NewWriter(f.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tDISTRO\tVERSION\tARCH\tUSER")
	for _, m := range machines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, m.Distro, m.Version, m.Arch, dash(m.DefaultUser))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
