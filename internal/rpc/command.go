package rpc

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

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

func (s *Server) commandRun(ctx context.Context, conn *jsonrpc2.Conn, id jsonrpc2.ID, p CommandRunParams) (any, error) {
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
		_ = conn.Notify(context.Background(), NotifyCommandOutput, CommandOutput{RequestID: id, Output: runs})
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

// Output batching (docs/protocol.md, "command.output"): a command's stdout and
// stderr go out as runs of raw text, in the order the binary read them, many
// lines per notification. A notification leaves when flushSize bytes wait, or
// flushDelay after the first byte of a batch, so that heavy output costs a few
// messages per megabyte while live output (a build log) is never held back
// longer than that; the rest goes before the command's reply. Lines are the
// client's business: it splits the text at "\n".
const (
	flushSize  = 256 << 10
	flushDelay = 5 * time.Millisecond
)

// outputBatcher gathers the runs of one command's output. Writers that find a
// full batch send it themselves, so a slow client slows the command down
// (its pipes fill) instead of the binary buffering without bound.
type outputBatcher struct {
	send   func([]OutputRun) // one notification
	sendMu sync.Mutex        // batches leave one at a time, in order

	mu     sync.Mutex
	runs   []pendingRun
	size   int
	timer  *time.Timer // armed while a batch waits
	closed bool
}

func newOutputBatcher(send func([]OutputRun)) *outputBatcher {
	b := &outputBatcher{send: send}
	b.timer = time.AfterFunc(time.Hour, b.flush)
	b.timer.Stop()
	return b
}

// stream returns the writer of one stream ("stdout" or "stderr").
func (b *outputBatcher) stream(name string) *outputStream { return &outputStream{b: b, name: name} }

func (b *outputBatcher) add(stream string, text []byte) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if n := len(b.runs); n > 0 && b.runs[n-1].stream == stream {
		b.runs[n-1].text = append(b.runs[n-1].text, text...)
	} else {
		b.runs = append(b.runs, pendingRun{stream: stream, text: append([]byte(nil), text...)})
	}
	first := b.size == 0
	b.size += len(text)
	full := b.size >= flushSize
	if first && !full {
		b.timer.Reset(flushDelay)
	}
	b.mu.Unlock()
	if full {
		b.flush()
	}
}

// flush sends the waiting batch, if any.
func (b *outputBatcher) flush() {
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	b.mu.Lock()
	runs := b.runs
	b.runs, b.size = nil, 0
	b.timer.Stop()
	b.mu.Unlock()
	if len(runs) > 0 {
		out := make([]OutputRun, len(runs))
		for i, r := range runs {
			out[i] = OutputRun{Stream: r.stream, Text: string(r.text)}
		}
		b.send(out)
	}
}

type pendingRun struct {
	stream string
	text   []byte
}

// Close sends what is left, a stream's incomplete UTF-8 tail included, and
// drops later writes (none come: the command's output is read to its end).
func (b *outputBatcher) Close(streams ...*outputStream) {
	for _, s := range streams {
		s.mu.Lock()
		if len(s.carry) > 0 {
			b.add(s.name, s.carry)
			s.carry = nil
		}
		s.mu.Unlock()
	}
	b.flush()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// outputStream is one stream of a batcher. It holds back an incomplete UTF-8
// sequence at the end of a write until the next, so that a character split
// across two reads is not sent as two halves (each half would reach the
// client as U+FFFD). Bytes that are not UTF-8 become U+FFFD, as JSON text
// requires.
type outputStream struct {
	b     *outputBatcher
	name  string
	mu    sync.Mutex
	carry []byte
}

func (s *outputStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	if len(s.carry) > 0 {
		p = append(s.carry, p...)
		s.carry = nil
	}
	if cut := incompleteTail(p); cut < len(p) {
		s.carry = append([]byte(nil), p[cut:]...)
		p = p[:cut]
	}
	if len(p) > 0 {
		s.b.add(s.name, p)
	}
	return n, nil
}

// incompleteTail returns where a UTF-8 sequence that the end of p cuts short
// begins, or len(p).
func incompleteTail(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return i
			}
			break
		}
	}
	return len(p)
}
