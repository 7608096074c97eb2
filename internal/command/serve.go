package command

import (
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/remote"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// ExitInterrupted is serve's exit status after SIGINT (128+2, as shells report
// it); the shim tells an interrupted run from a crashed binary by it.
const ExitInterrupted = 130

// ServeOptions are serve's flags and streams.
type ServeOptions struct {
	In    io.Reader
	Out   io.Writer
	Err   io.Writer
	Debug bool
	Mac   remote.Mac // serve --mac HOST: a relay to that Mac's serve
}

// NewCmdServe builds `serve`.
func NewCmdServe(f *Factory) *cobra.Command {
	opts := &ServeOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Speak the shim's JSON-RPC protocol on stdin and stdout",
		Long: `Serve the pyinfra shim's JSON-RPC 2.0 protocol (docs/protocol.md) on stdin and
stdout, with Content-Length framing. Stdout carries only protocol messages; logs
go to stderr. It exits when stdin closes or the client calls "shutdown".

With --mac HOST it is a relay: it runs "pyinfra-orbstack serve" on that Mac over
one ssh connection and speaks the same protocol for it (docs/remote.md).

pyinfra starts this command itself: run it by hand only to debug the protocol.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.In, opts.Out, opts.Err = f.In, f.Out, f.Err
			if err := checkMac(cmd, opts.Mac); err != nil {
				return err
			}
			return serveRun(cmd, f, opts)
		},
	}
	// Nothing but protocol may reach stdout, not even cobra's messages.
	cmd.SetOut(f.Err)
	cmd.Flags().BoolVar(&opts.Debug, "debug", false, "log each request and orbctl call to stderr (command texts are never logged)")
	addMacFlags(cmd, &opts.Mac)
	return cmd
}

func serveRun(cmd *cobra.Command, f *Factory, opts *ServeOptions) error {
	// If the client dies, writing to stdout must fail with EPIPE rather than
	// kill this process with SIGPIPE before it has stopped its orbctl
	// children. Catching the signal (not ignoring it) keeps children's default.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)
	// Ctrl-C in a terminal reaches this process along with pyinfra: main then
	// cancels the context, which stops every command. Exiting 130, as a shell
	// does, tells the shim the run was interrupted rather than that we failed.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	defer signal.Stop(interrupted)
	logger := log.New(opts.Err, "pyinfra-orbstack: ", log.LstdFlags)
	var err error
	if opts.Mac.IsLocal() {
		srv := rpc.NewServer(rpc.Options{
			Version: f.Version,
			Getenv:  f.Getenv,
			Logger:  logger,
			Debug:   opts.Debug,
		})
		err = srv.Serve(cmd.Context(), stdio{opts.In, opts.Out})
	} else {
		relay := remote.NewRelay(remote.RelayOptions{Mac: opts.Mac, Getenv: f.Getenv, Logger: logger, Debug: opts.Debug, Version: f.Version})
		err = relay.Serve(cmd.Context(), opts.In, opts.Out)
	}
	select {
	case <-interrupted:
		return &exitError{code: ExitInterrupted}
	default:
		return err
	}
}

// stdio joins the process's stdin and stdout into the stream jsonrpc2 wants.
type stdio struct {
	in  io.Reader
	out io.Writer
}

func (s stdio) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s stdio) Write(p []byte) (int, error) { return s.out.Write(p) }

func (s stdio) Close() error {
	var err error
	if c, ok := s.in.(io.Closer); ok {
		err = c.Close()
	}
	if c, ok := s.out.(io.Closer); ok {
		if e := c.Close(); e != nil && err == nil {
			err = e
		}
	}
	return err
}
