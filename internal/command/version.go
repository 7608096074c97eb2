package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// NewCmdVersion builds `version`.
func NewCmdVersion(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print this binary's version and protocol version",
		Long: `Print this binary's version and the shim protocol version it speaks. The Python
shim must speak the same protocol version; "pyinfra-orbstack doctor" also
reports OrbStack's own version.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(f.Out, "pyinfra-orbstack %s (protocol %d)\n", f.Version, rpc.ProtocolVersion)
			return nil
		},
	}
}
