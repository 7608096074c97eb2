// Package command holds the pyinfra-orbstack commands. Each command is built by a
// NewCmdX constructor from a Factory, so tests run them with their own streams,
// environment and orbctl (the Factory's one seam: tests point Getenv's
// PYINFRA_ORBSTACK_ORBCTL at the simulator or a fake). There is no runF hook:
// tests run whole commands against a real orbctl-compatible world instead.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/buildinfo"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// Factory carries what commands need from the outside world.
type Factory struct {
	In      io.Reader
	Out     io.Writer
	Err     io.Writer
	Getenv  func(string) string
	Version string
}

// Orbctl finds orbctl and returns a driver for it.
func (f *Factory) Orbctl() (*orbctl.Client, error) {
	path, err := orbctl.Locate(f.Getenv)
	if err != nil {
		return nil, err
	}
	return orbctl.New(path), nil
}

// Main runs the CLI and returns the process exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f := &Factory{In: stdin, Out: stdout, Err: stderr, Getenv: os.Getenv, Version: buildinfo.Version}
	root := NewCmdRoot(f)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exit *exitError
	if errors.As(err, &exit) {
		return exit.code
	}
	fmt.Fprintln(stderr, "Error:", describe(err))
	var usage *usageError
	if errors.As(err, &usage) && usage.cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", usage.cmd.CommandPath())
	}
	return exitCode(err)
}

// Exit statuses, so scripts can tell failures apart without parsing messages.
const (
	ExitFailure            = 1
	ExitUsage              = 2 // a bad flag, argument count or argument value
	ExitMachineNotFound    = 3
	ExitMachineExists      = 4
	ExitNotReady           = 5
	ExitOrbctlNotFound     = 6
	ExitOrbStackNotRunning = 7
)

func exitCode(err error) int {
	var usage *usageError
	switch {
	case errors.As(err, &usage), errors.Is(err, orbctl.ErrBadArgument),
		strings.HasPrefix(err.Error(), "unknown command "):
		return ExitUsage
	case errors.Is(err, orbctl.ErrMachineNotFound):
		return ExitMachineNotFound
	case errors.Is(err, orbctl.ErrMachineExists):
		return ExitMachineExists
	case errors.Is(err, orbctl.ErrNotReady):
		return ExitNotReady
	case errors.Is(err, orbctl.ErrOrbctlNotFound):
		return ExitOrbctlNotFound
	case errors.Is(err, orbctl.ErrOrbStackNotRunning):
		return ExitOrbStackNotRunning
	}
	return ExitFailure
}

// usageError is a mistake in how a command was called.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// args wraps a cobra argument check so its failures count as usage errors.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &usageError{cmd: cmd, err: err}
		}
		return nil
	}
}

// exitError ends a command with a status and nothing more to print (the
// command already said what was wrong).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// describe adds what to do next to the errors a user can act on.
func describe(err error) string {
	var oe *orbctl.Error
	if !errors.As(err, &oe) {
		return err.Error()
	}
	// orbctl's own usage errors already start with "Error: ", and Main adds one.
	msg := strings.TrimPrefix(oe.Error(), "Error: ")
	switch {
	case errors.Is(err, orbctl.ErrOrbctlNotFound):
		// A wrong override already names itself in the message.
		if len(oe.Searched) > 0 && !strings.HasPrefix(oe.Searched[0], orbctl.EnvOverride+"=") {
			msg += " (looked in " + strings.Join(oe.Searched, ", ") + ")"
		}
	case errors.Is(err, orbctl.ErrMachineNotFound):
		msg += "\nList the machines with: pyinfra-orbstack list"
	case errors.Is(err, orbctl.ErrOrbStackNotRunning):
		msg += "\nStart OrbStack with: orbctl start"
	}
	return msg
}

// NewCmdRoot builds the whole command tree.
func NewCmdRoot(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "pyinfra-orbstack",
		Short: "The engine behind pyinfra's @orbstack connector",
		Long: `pyinfra-orbstack drives OrbStack's orbctl for the pyinfra @orbstack connector.

pyinfra starts "pyinfra-orbstack serve" itself; you rarely need to. The other
commands help you check a setup (doctor), see your machines (list) and manage
machines from scripts and CI pipelines (machine, config).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return &usageError{cmd: cmd, err: err} })
	root.AddCommand(
		NewCmdServe(f),
		NewCmdList(f),
		NewCmdVersion(f),
		NewCmdDoctor(f),
		NewCmdMachine(f),
		NewCmdConfig(f),
		NewCmdStatus(f),
		NewCmdSSHInfo(f),
		NewCmdLimits(f),
		NewCmdMonitor(f),
		NewCmdLogs(f),
		NewCmdTransfer(f),
	)
	return root
}
