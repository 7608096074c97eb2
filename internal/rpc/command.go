package rpc

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/session"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// commandEnv validates the command's variables and returns them as sorted
// K=V words. They reach the machine inside the command's script, through
// env(1) (orbctl forwards only a whitelist of the caller's variables), never
// in an argv on the Mac.
func commandEnv(p CommandRunParams) ([]string, error) {
	if len(p.Env) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(p.Env))
	for k := range p.Env {
		if !envName.MatchString(k) {
			return nil, invalidParams("env", "environment variable name %q is not valid (letters, digits and _, not starting with a digit)", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	env := make([]string, len(keys))
	for i, k := range keys {
		env[i] = k + "=" + p.Env[k]
	}
	return env, nil
}

func (s *Server) commandRun(ctx context.Context, id jsonrpc2.ID, p CommandRunParams) (any, error) {
	if p.Machine == "" {
		return nil, invalidParams("machine", "command.run needs a machine name")
	}
	if p.Command == "" {
		return nil, invalidParams("command", "command.run needs a command")
	}
	if p.Timeout < 0 {
		return nil, invalidParams("timeout", "timeout must not be negative, got %v", p.Timeout)
	}
	env, err := commandEnv(p)
	if err != nil {
		return nil, err
	}
	var stdinData []byte // nil = no stdin
	if p.StdinB64 != "" {
		data, err := base64.StdEncoding.DecodeString(p.StdinB64)
		if err != nil {
			return nil, invalidParams("stdin_b64", "stdin_b64 is not valid base64: %v", err)
		}
		stdinData = data
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	runCtx := ctx
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, seconds(p.Timeout), errTimedOut)
		defer cancel()
	}

	out := newOutputBatcher(func(runs []OutputRun) {
		s.notify(encodeOutput(id, runs))
	})
	stdout, stderr := out.stream("stdout"), out.stream("stderr")
	code, err := s.runCommand(runCtx, c, p, env, stdinData, stdout, stderr)
	// Run has returned, so orbctl's output is fully read: send what is left
	// before the reply goes out.
	out.Close(stdout, stderr)
	if err != nil {
		if errors.Is(context.Cause(runCtx), errTimedOut) && ctx.Err() == nil {
			return nil, newError(CodeTimeout,
				fmt.Sprintf("command timed out after %gs on %s and was killed", p.Timeout, p.Machine),
				ErrorData{Kind: "timeout", Machine: p.Machine, Timeout: p.Timeout})
		}
		return nil, err
	}
	return CommandRunResult{ExitCode: code}, nil
}

// runCommand runs one command through a session of the pool (see
// internal/session) when it can, else through a one-shot agent of its own.
// Either way the command's text reaches the machine on orbctl's stdin, never
// in an argv on the Mac, and a cancelled command's process group is killed
// inside the machine. The one-shot path only runs a command the pool did not
// start, so no command runs twice.
func (s *Server) runCommand(ctx context.Context, c *orbctl.Client, p CommandRunParams, env []string, stdin []byte, stdout, stderr io.Writer) (int, error) {
	key := session.Key{Machine: p.Machine, User: p.User}
	req := session.Request{Command: p.Command, Workdir: p.Workdir, Env: env, Stdin: stdin, Stdout: stdout, Stderr: stderr}
	code, err := s.sessions.Run(ctx, c, key, req)
	if !errors.Is(err, session.ErrUnavailable) {
		return code, err
	}
	return s.sessions.RunOnce(ctx, c, key, req)
}
