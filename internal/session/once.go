package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// Check refuses a request that no machine can run: a script over MaxScript
// bytes or with a NUL byte (neither fits in an argument). The error is an
// *orbctl.Error of kind ErrBadArgument saying what to do.
func Check(req Request) error {
	script := commandScript(req.Command, req.Workdir, req.Env)
	if len(script) > MaxScript {
		return &orbctl.Error{Kind: orbctl.ErrBadArgument, ExitCode: -1, Message: fmt.Sprintf(
			"the command is %d bytes long; a command reaches the machine as one argument of `sh -c`, which Linux "+
				"limits to %d bytes: upload a long script with files.put (or files.template) and run the file",
			len(script), MaxScript)}
	}
	if strings.IndexByte(script, 0) >= 0 {
		return &orbctl.Error{Kind: orbctl.ErrBadArgument, ExitCode: -1,
			Message: "the command contains a NUL byte, which no shell command can hold: pass binary data as stdin or a file"}
	}
	return nil
}

// RunOnce runs req through an agent of its own, started for it and ended
// after it: the way commands run when sessions are off, or when a request
// does not suit a pooled session (large stdin). It keeps every guarantee of a
// pooled session: the command's text travels on orbctl's stdin, never in an
// argv; a cancelled command's process group is killed as root; if the binary
// dies, the agent's watcher kills the command. A machine that lacks a tool the
// agent needs (remembered per machine and user, as for sessions) runs the
// command the bare way (RunBare). The agent ends in the background, so the
// reply does not wait for it; Close waits for it.
func (p *Pool) RunOnce(ctx context.Context, c *orbctl.Client, key Key, req Request) (int, error) {
	if err := Check(req); err != nil {
		return -1, withMachine(err, key.Machine)
	}
	ks, err := p.state(key)
	if Unsupported(err) {
		return RunBare(ctx, c, key, req)
	}
	if err != nil { // closed: the server is shutting down
		return -1, err
	}
	s, err := start(ctx, c, key, p.ReadyTimeout)
	if errors.Is(err, errUnsupported) {
		p.mu.Lock()
		ks.unsupported = err
		p.mu.Unlock()
		return RunBare(ctx, c, key, req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, diagnose(ctx, c, key, err)
	}
	code, err := s.run(ctx, req)
	p.closeAsync(s)
	if errors.Is(err, errNotDelivered) {
		return -1, s.endedError(err)
	}
	return code, err
}

// Unsupported reports whether err says the machine lacks a tool the agent
// needs (the pool remembers it per machine and user): such a machine's
// commands go straight to RunBare.
func Unsupported(err error) bool { return errors.Is(err, errUnsupported) }

// bareScript runs as `sh -c bareScript pyinfra-orbstack-run NONCE` and needs
// nothing but sh: it reads the command's script from stdin, a line at a time
// with the read builtin (which never reads past a newline on a pipe), up to
// the line NONCE, and execs it; the rest of stdin is the command's stdin. A
// script cut short (no NONCE line) is not run.
const bareScript = `n=$1 s=
while IFS= read -r l; do
  if [ "$l" = "$n" ]; then exec sh -c "$s"; fi
  s="$s$l
"
done
echo "pyinfra-orbstack: the command arrived cut short and was not run" >&2
exit 1`

// RunBare runs req in a machine that lacks the agent's tools (a minimal image
// with sh and little else), still with its text on orbctl's stdin rather
// than in an argv. What it cannot do without those tools: kill a cancelled
// command's whole process group as root (orbctl's own signal forwarding is
// all there is: SIGTERM, then SIGKILL to orbctl after the client's KillDelay),
// or notice that the binary died while the command ran.
func RunBare(ctx context.Context, c *orbctl.Client, key Key, req Request) (int, error) {
	if err := Check(req); err != nil {
		return -1, withMachine(err, key.Machine)
	}
	nonce := newNonce()
	script := commandScript(req.Command, req.Workdir, req.Env)
	input := io.MultiReader(strings.NewReader(script+"\n"+nonce+"\n"), bytes.NewReader(req.Stdin))
	return c.Run(ctx, orbctl.RunSpec{Machine: key.Machine, User: key.User,
		Argv:  []string{"sh", "-c", bareScript, "pyinfra-orbstack-run", nonce},
		Stdin: input, Stdout: req.Stdout, Stderr: req.Stderr})
}

// diagnose explains why an agent could not start: a plain `orbctl run … true` (a constant command: nothing to
// hide) reports the reason the way orbctl and the driver classify it (missing
// machine, missing user, OrbStack stopped).
func diagnose(ctx context.Context, c *orbctl.Client, key Key, cause error) error {
	var stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{Machine: key.Machine, User: key.User, Argv: []string{"true"}, Stderr: &stderr})
	if err != nil {
		return err
	}
	msg := strings.TrimSpace(stderr.String())
	if code == 0 || msg == "" {
		msg = cause.Error()
	}
	return &orbctl.Error{Kind: orbctl.ErrFailed, Machine: key.Machine, ExitCode: code, Stderr: msg,
		Message: fmt.Sprintf("cannot start a command in machine %s: %s", key.Machine, msg)}
}

func withMachine(err error, machine string) error {
	var oe *orbctl.Error
	if errors.As(err, &oe) && oe.Machine == "" {
		oe.Machine = machine
	}
	return err
}
