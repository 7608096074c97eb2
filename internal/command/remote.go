package command

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/remote"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// ExitMacUnreachable is list --mac's status when the Mac could not be reached
// over SSH, or has no pyinfra-orbstack (docs/cli.md).
const ExitMacUnreachable = 8

// addMacFlags adds --mac and the ssh flags (docs/remote.md) to cmd.
func addMacFlags(cmd *cobra.Command, m *remote.Mac) {
	fl := cmd.Flags()
	fl.StringVar(&m.Host, "mac", "", "the Mac whose OrbStack to use, an ssh destination (alias, [user@]host, ssh://[user@]host[:port]); default this one")
	fl.IntVar(&m.Port, "ssh-port", 0, "ssh port on that Mac (default: ssh's own)")
	fl.StringVar(&m.User, "ssh-user", "", "ssh user on that Mac (default: ssh's own)")
	fl.StringVar(&m.Identity, "ssh-key", "", "ssh private key file (default: ssh's own)")
	fl.StringVar(&m.Config, "ssh-config", "", "ssh config file (default: $"+remote.EnvSSHConfig+", else ssh's own)")
	fl.StringArrayVar(&m.Options, "ssh-option", nil, "an ssh option KEY=VALUE, as for ssh -o (repeatable)")
	fl.StringVar(&m.Binary, "remote-binary", "", "pyinfra-orbstack on that Mac (default: found on the PATH of its non-interactive shell)")
}

// checkMac refuses ssh flags without --mac and values ssh would misread.
func checkMac(cmd *cobra.Command, m remote.Mac) error {
	if m.IsLocal() {
		for _, name := range []string{"ssh-port", "ssh-user", "ssh-key", "ssh-config", "ssh-option", "remote-binary"} {
			if cmd.Flags().Changed(name) {
				return &usageError{cmd: cmd, err: fmt.Errorf("--%s needs --mac", name)}
			}
		}
		return nil
	}
	if err := m.Check(); err != nil {
		return &usageError{cmd: cmd, err: err}
	}
	return nil
}

// runOnMac runs this binary's args on the Mac over ssh, its stdout to out:
// list --mac. A failure to reach the Mac is worded by remote.Classify and
// exits ExitMacUnreachable; the remote command's own failure keeps its
// status and message.
func runOnMac(f *Factory, cmd *cobra.Command, m remote.Mac, args ...string) error {
	c := m.Command(f.Getenv, "", args...)
	c.Stdout = f.Out
	var stderr strings.Builder
	c.Stderr = &stderr
	c.Stdin = nil
	err := c.Run()
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		fmt.Fprintf(f.Err, "Error: cannot run ssh to reach Mac %s: %v: install OpenSSH's client, or set %s to it\n", m.Host, err, remote.EnvSSH)
		return &exitError{code: ExitMacUnreachable}
	}
	code := exit.ExitCode()
	if code < 0 {
		code = 255
	}
	if m.Unreached(code, stderr.String()) {
		fmt.Fprintln(f.Err, "Error:", remote.Classify(m, code, stderr.String()).Message)
		return &exitError{code: ExitMacUnreachable}
	}
	// The remote binary's own failure: its message ("Error: ...") and status.
	msg := strings.TrimRight(stderr.String(), "\n")
	if msg != "" {
		fmt.Fprintf(f.Err, "%s\n(on Mac %s)\n", msg, m.Host)
	}
	return &exitError{code: code}
}

// NewCmdTransfer builds the hidden `transfer`: the remote half of a relay's
// file.put and file.get (docs/protocol.md, "The transfer subcommand").
func NewCmdTransfer(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "transfer",
		Short: "One file transfer for a relay on another Mac (serve --mac); reads its request on stdin",
		Long: `Do one file.put or file.get for a relay ("serve --mac" on another Mac), which
runs this command over ssh: a one-line JSON header on stdin (and a put's bytes),
the answer on stdout (docs/protocol.md, "The transfer subcommand").

pyinfra's relay runs this command itself: it is not meant to be run by hand.`,
		Hidden: true,
		Args:   args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The relay gone, writing must fail with EPIPE, not kill this
			// process before it stopped its orbctl child.
			sigpipe := make(chan os.Signal, 1)
			signal.Notify(sigpipe, syscall.SIGPIPE)
			defer signal.Stop(sigpipe)
			srv := rpc.NewServer(rpc.Options{Version: f.Version, Getenv: f.Getenv, Logger: log.New(f.Err, "pyinfra-orbstack transfer: ", log.LstdFlags)})
			if err := srv.Transfer(cmd.Context(), f.In, f.Out); err != nil {
				return &exitError{code: ExitFailure}
			}
			return nil
		},
	}
	cmd.SetOut(f.Err)
	return cmd
}
