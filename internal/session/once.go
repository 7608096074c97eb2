package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
// agent needs gets an error naming it (there is no other way to run a command
// without putting its text on the Mac's process list).
func RunOnce(ctx context.Context, c *orbctl.Client, key Key, req Request) (int, error) {
	if err := Check(req); err != nil {
		return -1, withMachine(err, key.Machine)
	}
	s, err := start(ctx, c, key, DefaultReadyTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, diagnose(ctx, c, key, err)
	}
	defer s.close()
	code, err := s.run(ctx, req)
	if errors.Is(err, errNotDelivered) {
		return -1, s.endedError(err)
	}
	return code, err
}

// diagnose explains why an agent could not start. A missing tool is said as
// such; otherwise a plain `orbctl run … true` (a constant command: nothing to
// hide) reports the reason the way orbctl and the driver classify it (missing
// machine, missing user, OrbStack stopped).
func diagnose(ctx context.Context, c *orbctl.Client, key Key, cause error) error {
	if errors.Is(cause, errUnsupported) {
		return &orbctl.Error{Kind: orbctl.ErrFailed, Machine: key.Machine, ExitCode: -1, Message: fmt.Sprintf(
			"machine %s cannot run commands for pyinfra-orbstack: %v (install it in the machine: coreutils, util-linux or busybox)",
			key.Machine, cause)}
	}
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
