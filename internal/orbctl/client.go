// Package orbctl drives OrbStack's orbctl CLI: it finds it, runs it by argv (never
// through a shell on the Mac side), parses its JSON in every documented version's
// shape and turns its failures into typed errors that keep orbctl's own message.
//
// Traps from the orbctl reference that this package avoids on purpose:
//   - `run` rejects a literal `--`, and flags must come before the command, so
//     commands never start with "-" and no "--" is ever sent.
//   - `delete <ULID>` crashes orbctl, so Delete resolves the name first.
//   - `stop` without a name stops all of OrbStack, so Stop refuses an empty name.
//   - `run -m missing` prints nothing and exits 1 without a PTY, so a silent
//     exit 1 from Run is disambiguated with `info`. On a terminal it prints
//     "[-32098] machine not found: 'NAME'" (0.x: "machine not found: NAME");
//     an exit 1 whose only output is such a line is checked the same way,
//     so both forms are ErrMachineNotFound whether or not a terminal was there.
package orbctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// DefaultKillDelay is how long a cancelled orbctl gets between SIGTERM (which it
// forwards into the machine) and SIGKILL.
const DefaultKillDelay = 2 * time.Second

// Client runs one orbctl binary. It holds no state between calls and is safe
// for concurrent use.
type Client struct {
	Path      string
	KillDelay time.Duration
	// NewCmd builds the process for one orbctl invocation: the single seam
	// through which this package starts processes.
	NewCmd func(ctx context.Context, path string, args ...string) *exec.Cmd
	// Trace, when set, is told about every orbctl run (commands redacted).
	Trace func(args []string, took time.Duration, err error)
}

// New returns a Client for the orbctl at path.
func New(path string) *Client {
	return &Client{Path: path, KillDelay: DefaultKillDelay, NewCmd: exec.CommandContext}
}

func (c *Client) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := c.NewCmd(ctx, c.Path, args...)
	// SIGTERM first: orbctl forwards it into the machine, so the remote command
	// is stopped too; SIGKILL (and closed pipes) only after KillDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = c.KillDelay
	return cmd
}

// output runs orbctl to completion with a non-TTY stdin and returns its stdout.
// Failures become *Error with orbctl's message; machine names the machine the
// call is about, for the error.
func (c *Client) output(ctx context.Context, machine string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := c.command(ctx, args)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	c.trace(args, start, err)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, ctxErr
	}
	if err != nil {
		return stdout.Bytes(), c.failure(machine, args, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

func (c *Client) trace(args []string, start time.Time, err error) {
	if c.Trace != nil {
		c.Trace(args, time.Since(start), err)
	}
}

// unexpected is orbctl succeeding with output we cannot read.
func unexpected(machine string, args []string, err error) error {
	return &Error{Kind: ErrFailed, Machine: machine, Args: args, Message: err.Error()}
}

func (c *Client) failure(machine string, args []string, err error, stderr string) error {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return &Error{Kind: ErrFailed, Machine: machine, Args: args, ExitCode: -1,
			Message: fmt.Sprintf("cannot run %s: %v", c.Path, err)}
	}
	msg := trimUsage(stderr)
	e := &Error{Kind: classify(msg), Machine: machine, Args: args, Stderr: msg, ExitCode: exitErr.ExitCode(), Hint: hint(msg)}
	if msg == "" {
		e.Message = fmt.Sprintf("orbctl %s exited with status %d and printed nothing", strings.Join(args, " "), e.ExitCode)
	}
	return e
}

func badArgument(machine, format string, a ...any) error {
	return &Error{Kind: ErrBadArgument, Machine: machine, Message: fmt.Sprintf(format, a...)}
}

// checkName rejects values that orbctl would read as flags (or that would make
// it act on every machine). The error names the machine only when the value
// is one: a bad user or path is not a machine.
func checkName(what, v string) error {
	machine := ""
	if strings.HasSuffix(what, "machine name") {
		machine = v
	}
	if v == "" {
		return badArgument(machine, "%s must not be empty", what)
	}
	if strings.HasPrefix(v, "-") {
		return badArgument(machine, "%s %q must not start with '-'", what, v)
	}
	if machine != "" && !ValidName(v) {
		return badArgument(machine, "invalid %s '%s': %s", what, v, NameRule)
	}
	return nil
}

// List returns every (non-builtin) machine.
func (c *Client) List(ctx context.Context) ([]Machine, error) {
	args := []string{"list", "-f", "json"}
	out, err := c.output(ctx, "", args...)
	if err != nil {
		return nil, err
	}
	machines, err := ParseList(out)
	if err != nil {
		return nil, unexpected("", args, err)
	}
	return machines, nil
}

// Info describes one machine by name (or ID).
func (c *Client) Info(ctx context.Context, name string) (Machine, error) {
	if err := checkName("machine name", name); err != nil {
		return Machine{}, err
	}
	args := []string{"info", name, "-f", "json"}
	out, err := c.output(ctx, name, args...)
	if err != nil {
		return Machine{}, err
	}
	m, err := ParseInfo(out)
	if err != nil {
		return Machine{}, unexpected(name, args, err)
	}
	return m, nil
}

// Names returns the names of existing machines, for "did you mean" messages.
// It is best effort: a failure gives nil.
func (c *Client) Names(ctx context.Context) []string {
	machines, err := c.List(ctx)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(machines))
	for _, m := range machines {
		names = append(names, m.Name)
	}
	return names
}

// RunSpec is one command to run inside a machine.
type RunSpec struct {
	Machine string
	User    string // "" = the machine's default user
	Workdir string // "" = the user's home
	Argv    []string
	Stdin   io.Reader // nil = empty
	Stdout  io.Writer
	Stderr  io.Writer
}

// RunArgs builds orbctl's argv for spec: `run -m M [-u U] -w W ARGV...`.
// `-w ""` asks for the user's home; without -w orbctl would use the caller's cwd.
func RunArgs(spec RunSpec) ([]string, error) {
	if err := checkName("machine name", spec.Machine); err != nil {
		return nil, err
	}
	if len(spec.Argv) == 0 {
		return nil, badArgument(spec.Machine, "no command to run")
	}
	if strings.HasPrefix(spec.Argv[0], "-") {
		return nil, badArgument(spec.Machine, "command %q must not start with '-' (orbctl would read it as a flag)", spec.Argv[0])
	}
	args := []string{"run", "-m", spec.Machine}
	if spec.User != "" {
		if err := checkName("user", spec.User); err != nil {
			err.(*Error).Machine = spec.Machine
			return nil, err
		}
		args = append(args, "-u", spec.User)
	}
	args = append(args, "-w", spec.Workdir)
	return append(args, spec.Argv...), nil
}

// Run runs a command in a machine and returns its exit status. A non-zero exit
// is not an error. When ctx ends, the command is signalled (SIGTERM, forwarded
// into the machine, then SIGKILL after KillDelay) and ctx's error is returned.
// A missing machine is ErrMachineNotFound.
func (c *Client) Run(ctx context.Context, spec RunSpec) (int, error) {
	args, err := RunArgs(spec)
	if err != nil {
		return -1, err
	}
	cmd := c.command(ctx, args)
	cmd.Stdin = spec.Stdin
	cmd.Stdout = spec.Stdout
	// orbctl's own stderr and the command's are one stream; keep a copy of the
	// start to explain a silent failure.
	var head headBuffer
	cmd.Stderr = &head
	if spec.Stderr != nil {
		cmd.Stderr = io.MultiWriter(spec.Stderr, &head)
	}
	var stdoutSeen countingWriter
	switch out := spec.Stdout.(type) {
	case *os.File:
		// Handed to orbctl as its fd, so large downloads skip this process.
		cmd.Stdout = out
	case nil:
		cmd.Stdout = &stdoutSeen
	default:
		cmd.Stdout = io.MultiWriter(out, &stdoutSeen)
	}
	start := time.Now()
	err = cmd.Run()
	c.trace(redactCommand(args, spec), start, err)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return -1, ctxErr
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return -1, &Error{Kind: ErrFailed, Machine: spec.Machine, Args: redactCommand(args, spec), ExitCode: -1,
			Message: fmt.Sprintf("cannot run %s: %v", c.Path, err)}
	}
	code := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal()) // as a shell reports it, rather than -1
	}
	silent := head.Len() == 0
	if code == 1 && stdoutSeen.n == 0 && (silent || IsRunMachineNotFound(head.String(), spec.Machine)) {
		// `run -m missing` exits 1 in silence, or with orbctl's not-found
		// line (which the command itself could print too): ask info
		// whether the machine exists.
		if _, infoErr := c.Info(ctx, spec.Machine); errors.Is(infoErr, ErrMachineNotFound) {
			return -1, infoErr
		}
		// `run -u nosuchuser` fails the same silent way.
		if silent && spec.User != "" && !c.userExists(ctx, spec.Machine, spec.User) {
			return -1, &Error{Kind: ErrBadArgument, Machine: spec.Machine, Args: redactCommand(args, spec), ExitCode: code,
				Message: fmt.Sprintf("there is no user %q in machine %s", spec.User, spec.Machine)}
		}
	}
	return code, nil
}

// userExists asks the machine (as its default user) whether user exists; when
// it cannot tell, it says yes, leaving the command's own exit status alone.
func (c *Client) userExists(ctx context.Context, machine, user string) bool {
	code, err := c.Run(ctx, RunSpec{Machine: machine, Argv: []string{"id", "-u", user}})
	return err != nil || code != 1
}

// redactCommand drops the command from run's argv: pyinfra puts sudo passwords
// and _env values into it, and errors get logged.
func redactCommand(args []string, spec RunSpec) []string {
	kept := append([]string(nil), args[:len(args)-len(spec.Argv)]...)
	return append(kept, "<command>")
}

// headBuffer keeps the first 4 KiB written to it.
type headBuffer struct{ bytes.Buffer }

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := 4096 - h.Len(); room > 0 {
		h.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// WaitReady polls `orbctl run -m M true` until it succeeds or timeout passes.
// Running `true` is safe to repeat, so this is the one place that retries.
func (c *Client) WaitReady(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		attemptCtx, cancel := context.WithDeadline(ctx, deadline)
		var stderr bytes.Buffer
		code, err := c.Run(attemptCtx, RunSpec{Machine: name, Argv: []string{"true"}, Stderr: &stderr})
		cancel()
		if err == nil && code == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrMachineNotFound) || errors.Is(err, ErrBadArgument) {
			return err
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			last = err.Error()
		} else if s := strings.TrimSpace(stderr.String()); s != "" {
			last = s
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("machine %s did not answer `orbctl run -m %s true` within %s", name, name, timeout)
			if last != "" {
				msg += ": " + last
			}
			return &Error{Kind: ErrNotReady, Machine: name, Args: []string{"run", "-m", name, "true"}, Message: msg}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
