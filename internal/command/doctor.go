package command

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// NewCmdDoctor builds `doctor`.
func NewCmdDoctor(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that orbctl is found and OrbStack is running",
		Long: `Check the setup the @orbstack connector needs, one line per check:

  orbctl     which orbctl is used and why (` + orbctl.EnvOverride + `, PATH or an install location)
  OrbStack   whether it runs ("orbctl status")
  version    OrbStack's version, and whether it is the orbctl simulator
  machines   how many machines exist and run

Each line starts with ok, warn (works, but worth knowing) or FAIL. It exits 1
when a check fails, after printing what to do about it.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return doctorRun(cmd, f)
		},
	}
}

func doctorRun(cmd *cobra.Command, f *Factory) error {
	ctx := cmd.Context()
	ok := true
	line := func(mark, check, detail string) { fmt.Fprintf(f.Out, "%-4s %-9s %s\n", mark, check, detail) }
	report := func(good bool, check, detail string) {
		mark := "ok"
		if !good {
			mark, ok = "FAIL", false
		}
		line(mark, check, detail)
	}

	c, err := f.Orbctl()
	if err != nil {
		report(false, "orbctl", describe(err))
		return &exitError{code: 1}
	}
	report(true, "orbctl", c.Path+" ("+orbctlSource(f, c.Path)+")")

	status, err := c.Status(ctx)
	switch {
	case err != nil:
		report(false, "OrbStack", "orbctl status failed: "+err.Error())
	case status == "Stopped":
		// Not a failure: orbctl starts OrbStack on first use.
		line("warn", "OrbStack", "Stopped: orbctl starts it on first use (or now: \"orbctl start\")")
	case status != "Running":
		line("warn", "OrbStack", status)
	default:
		report(true, "OrbStack", status)
	}

	if v, err := c.Version(ctx); err != nil {
		report(false, "version", "orbctl version failed: "+err.Error())
	} else {
		detail := v.Version
		if v.Simulator {
			detail += " (the orbctl simulator, not OrbStack)"
		}
		report(true, "version", detail)
	}

	{
		if machines, err := c.List(ctx); err != nil {
			report(false, "machines", "orbctl list failed: "+describe(err))
		} else {
			running := 0
			for _, m := range machines {
				if m.State == "running" {
					running++
				}
			}
			report(true, "machines", fmt.Sprintf("%d (%d running)", len(machines), running))
		}
	}
	if !ok {
		return &exitError{code: 1}
	}
	return nil
}

func orbctlSource(f *Factory, path string) string {
	if f.Getenv(orbctl.EnvOverride) != "" {
		return "from " + orbctl.EnvOverride
	}
	if p, err := exec.LookPath("orbctl"); err == nil && p == path {
		return "from PATH"
	}
	if strings.HasPrefix(path, "/Applications/") {
		return "inside the OrbStack app"
	}
	return "install location"
}
