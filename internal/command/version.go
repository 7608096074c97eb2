package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// VersionJSON is what `version --json` prints.
type VersionJSON struct {
	Version  string        `json:"version"`
	Protocol int           `json:"protocol"`
	OrbStack *OrbStackJSON `json:"orbstack"` // nil when orbctl is missing or says nothing
}

// OrbStackJSON is OrbStack's own version.
type OrbStackJSON struct {
	Version string `json:"version"`
	Code    int    `json:"code"` // major*10^6 + minor*10^4 + patch*10^2
	Commit  string `json:"commit"`
}

// NewCmdVersion builds `version`.
func NewCmdVersion(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print this binary's version and protocol version",
		Long: `Print this binary's version and the shim protocol version it speaks. The Python
shim must speak the same protocol version; "pyinfra-orbstack doctor" also
reports OrbStack's own version. With --json, OrbStack's version is included
("orbstack": {"version", "code", "commit"}, or null without orbctl).`,
		Example: `  pyinfra-orbstack version
  pyinfra-orbstack version --json | jq .orbstack.code`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !asJSON {
				fmt.Fprintf(f.Out, "pyinfra-orbstack %s (protocol %d)\n", f.Version, rpc.ProtocolVersion)
				return nil
			}
			out := VersionJSON{Version: f.Version, Protocol: rpc.ProtocolVersion}
			if c, err := f.Orbctl(); err == nil {
				if v, err := c.Version(cmd.Context()); err == nil && v.Version != "" {
					out.OrbStack = &OrbStackJSON{Version: v.Version, Code: orbctl.VersionCode(v.Version), Commit: v.Commit}
				}
			}
			return printJSON(f, out)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, with OrbStack's version")
	return cmd
}
