//go:build linux

package orbctlcmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/guest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/pkgproxy"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/vm"
	"github.com/spf13/cobra"
)

// Main runs the simulator with argv (os.Args) and returns the exit code.
func Main(argv []string) int {
	if len(argv) >= 3 {
		switch argv[1] {
		case guest.InitCommand:
			return guest.InitMain(argv[2])
		case guest.ExecCommand:
			return guest.ExecMain(argv[2])
		case pkgproxy.Command:
			return pkgproxy.Main(argv[2:])
		}
	}
	logInvocation(argv[1:])
	app, err := newApp(os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "orbsim: %v\n", err)
		return 1
	}
	if err := latency(); err != nil {
		fmt.Fprintf(os.Stderr, "orbsim: %v\n", err)
		return 1
	}
	root := NewCmdRoot(app)
	name := filepath.Base(argv[0])
	if name == "orb" {
		// Usage and help name the program as invoked (GH#2122: `orb run …`).
		root.Use = "orb"
		app.Program = "orb"
	}
	args := rewriteForName(root, name, argv[1:])
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	return report(app, cmd, err)
}

// rewriteForName applies §1: `orb CMD...` is `orbctl run CMD...` unless CMD
// is a subcommand (only the first argument is checked); `orb` alone is an
// interactive shell; any other name (a command symlink) runs that command.
func rewriteForName(root *cobra.Command, name string, args []string) []string {
	switch name {
	case "orbctl":
		return args
	case "orb":
		if len(args) == 0 {
			return []string{"run"}
		}
		if c, _, err := root.Find(args[:1]); err == nil && c != root {
			return args
		}
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return args
		}
		return append([]string{"run"}, args...)
	default:
		return append([]string{"run", name}, args...)
	}
}

func report(app *App, cmd *cobra.Command, err error) int {
	if err == nil {
		return 0
	}
	var rpc *rpcError
	var code exitStatus
	var pre preflightError
	var host *state.HostError
	switch {
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &rpc):
		fmt.Fprintln(app.Stderr, rpc.Error())
		return 1
	case errors.As(err, &pre):
		fmt.Fprintln(app.Stderr, pre.Error())
		return 1
	case errors.As(err, &host):
		// A host problem (disk full, unwritable ORBSIM_HOME): usage text
		// would only bury the message.
		fmt.Fprintln(app.Stderr, host.Error())
		return 1
	case errors.Is(err, errAutoStart):
		fmt.Fprintln(app.Stderr, err.Error())
		return 1
	}
	fmt.Fprintf(app.Stderr, "Error: %s\n", err)
	if cmd != nil {
		fmt.Fprint(app.Stderr, cmd.UsageString())
	}
	return 1
}

// preflightError is the "isolation unavailable" refusal.
type preflightError struct{ error }

// NewCmdRoot builds the orbctl command tree.
func NewCmdRoot(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:           "orbctl",
		Short:         "Use and manage OrbStack and its machines.",
		Long:          "Use and manage OrbStack and its machines.",
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Name() == "version" || cmd.Name() == "help" {
				return nil
			}
			if err := vm.Preflight(); err != nil {
				return preflightError{err}
			}
			return app.openStore()
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.AddGroup(
		&cobra.Group{ID: "machines", Title: "Linux machines:"},
		&cobra.Group{ID: "containers", Title: "Containers:"},
		&cobra.Group{ID: "general", Title: "General:"},
	)
	machines := []*cobra.Command{
		NewCmdList(app), NewCmdInfo(app), NewCmdCreate(app), NewCmdDelete(app),
		NewCmdStart(app), NewCmdStop(app), NewCmdRestart(app), NewCmdRun(app),
		NewCmdPush(app), NewCmdPull(app), NewCmdClone(app), NewCmdRename(app),
		NewCmdExport(app), NewCmdImport(app), NewCmdDefault(app), NewCmdLogs(app),
		NewCmdSSH(app),
	}
	for _, c := range machines {
		c.GroupID = "machines"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newCmdNotModelled("docker", "Use Docker"), newCmdNotModelled("k8s", "Use Kubernetes")} {
		c.GroupID = "containers"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{NewCmdConfig(app), NewCmdStatus(app), NewCmdVersion(app), NewCmdUpdate(app)} {
		c.GroupID = "general"
		root.AddCommand(c)
	}
	root.SetHelpCommandGroupID("general")
	return root
}

// newCmdNotModelled stands in for OrbStack's container commands, which the
// simulator does not model; they fail clearly instead of being unknown.
func newCmdNotModelled(name, short string) *cobra.Command {
	return &cobra.Command{
		Use:                name,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return preflightError{fmt.Errorf("orbsim: `orbctl %s` is not modelled by the simulator (machines only; see docs/simulator.md)", name)}
		},
	}
}
