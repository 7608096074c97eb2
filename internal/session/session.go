// Package session runs commands in OrbStack machines through long-lived
// `orbctl run` children, one command at a time each, so that a command costs
// a write and a read instead of an orbctl spawn (tens of ms on a real Mac).
// See docs/architecture.md, "Command sessions".
package session

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// Key identifies the sessions that may run a command: same machine, same user
// ("" = the machine's default user).
type Key struct {
	Machine string
	User    string
}

// Request is one command for a session.
type Request struct {
	Command string
	Workdir string   // "" = the user's home
	Env     []string // K=V, already validated
	Stdin   []byte   // nil = no stdin (/dev/null)
	Stdout  io.Writer
	Stderr  io.Writer
}

// errNotDelivered means the command never reached the agent, so running it
// another way runs it once.
var errNotDelivered = errors.New("the session ended before the command was sent")

// errUnsupported means the machine lacks a tool the agent needs.
var errUnsupported = errors.New("the machine lacks a tool the session agent needs")

// session is one agent in one machine. It is used by one command at a time
// (the pool hands it out exclusively).
type session struct {
	key    Key
	client *orbctl.Client
	proc   *orbctl.Process
	stdout *bufio.Reader
	stderr *bufio.Reader
	dir    string // the agent's private directory in the machine
	// bytewise: the agent reads payloads a byte per read(2) (busybox), too
	// slow for large stdin.
	bytewise bool
	// broken means the session must not run another command: it died, or a
	// command was cancelled in it (its state is unknown).
	broken bool
}

// maxLineScript bounds a script sent as one line (agentScript, "Request"):
// the shell's read takes a byte per read(2) from a pipe, cheaper than a fork
// only for short text.
const maxLineScript = 2048

// readerSize bounds one read from the agent; longer lines pass in pieces.
const readerSize = 64 << 10

var safeDir = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// start starts an agent and waits until it is ready or ctx ends. A machine
// whose agent cannot run (a missing tool) gives errUnsupported; any other
// failure to start (missing machine or user, orbctl failing) gives an error
// wrapping the reason, and the caller runs the command the per-call way, which
// reports that reason as it always has.
func start(ctx context.Context, c *orbctl.Client, key Key, readyTimeout time.Duration) (*session, error) {
	nonce := newNonce()
	proc, err := c.StartProcess(orbctl.RunSpec{Machine: key.Machine, User: key.User,
		Argv: []string{"sh", "-c", agentScript, "pyinfra-orbstack-agent", nonce}})
	if err != nil {
		return nil, err
	}
	s := &session{key: key, client: c, proc: proc,
		stdout: bufio.NewReaderSize(proc.Stdout, readerSize), stderr: bufio.NewReaderSize(proc.Stderr, readerSize)}
	// A login shell's profile may print: skip whatever comes before the markers.
	outReady, errReady := make(chan lineResult, 1), make(chan lineResult, 1)
	go func() { outReady <- skipTo(s.stdout, nonce+" ") }()
	go func() { errReady <- skipTo(s.stderr, nonce+" ready") }()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var out, errLine lineResult
	for n := 0; n < 2; {
		select {
		case out = <-outReady:
			outReady = nil
			n++
			if out.err == nil && !strings.HasPrefix(out.rest, "ready ") {
				err = out.err
				if strings.HasPrefix(out.rest, "unsupported ") {
					err = fmt.Errorf("%w: %s", errUnsupported, strings.TrimPrefix(out.rest, "unsupported "))
				} else {
					err = fmt.Errorf("unexpected session start line %q", out.rest)
				}
			} else if out.err != nil {
				err = fmt.Errorf("the session agent ended before it was ready: %w", out.err)
			}
		case errLine = <-errReady:
			errReady = nil
			n++
			if errLine.err != nil && err == nil {
				err = fmt.Errorf("the session agent ended before it was ready: %w", errLine.err)
			}
		case <-ctx.Done():
			err = ctx.Err()
		case <-timer.C:
			err = fmt.Errorf("the session agent was not ready within %s", readyTimeout)
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		mode, dir, _ := strings.Cut(strings.TrimPrefix(out.rest, "ready "), " ")
		s.bytewise, s.dir = mode == "bytewise", dir
		if !safeDir.MatchString(s.dir) {
			err = fmt.Errorf("the session agent reported an odd directory %q", s.dir)
		}
	}
	if err != nil {
		proc.Kill()
		// The readers own the bufio.Readers until they return; Kill closed
		// the pipes, so they return now.
		if outReady != nil {
			<-outReady
		}
		if errReady != nil {
			<-errReady
		}
		return nil, err
	}
	return s, nil
}

type lineResult struct {
	rest string // the line after the prefix, without its newline
	err  error
}

// skipTo reads lines until one starts with prefix.
func skipTo(r *bufio.Reader, prefix string) lineResult {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return lineResult{err: err}
		}
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return lineResult{rest: strings.TrimSuffix(rest, "\n")}
		}
	}
}

func newNonce() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // documented never to fail on Linux/macOS
	}
	return "pyinfra-orbstack-" + hex.EncodeToString(b)
}

// alive reports whether the agent's orbctl is still running.
func (s *session) alive() bool {
	if s.broken {
		return false
	}
	select {
	case <-s.proc.Exited():
		return false
	default:
		return true
	}
}

// close ends the agent: EOF on its stdin, then signals.
func (s *session) close() { s.proc.Close(time.Second) }

// endedError is a command whose session died under it. The command is not run
// again: it may have run, in part or in full.
func (s *session) endedError(cause error) error {
	return &orbctl.Error{Kind: orbctl.ErrFailed, Machine: s.key.Machine, ExitCode: -1,
		Message: fmt.Sprintf("the orbctl session running the command in machine %s ended before the command did "+
			"(was the machine stopped, restarted or deleted?); the command may have run in part and was not run again: %v",
			s.key.Machine, cause)}
}

// run runs one command. It returns the command's exit status; when ctx ends it
// kills the command inside the machine (SIGTERM to its process group, SIGKILL
// after the client's KillDelay), marks the session broken and returns ctx's
// error. errNotDelivered means the agent did not start the command.
func (s *session) run(ctx context.Context, req Request) (int, error) {
	if !s.alive() {
		s.broken = true
		return -1, errNotDelivered
	}
	id := newNonce()
	script := commandScript(req.Command, req.Workdir, req.Env)
	stdinLen := "-"
	if req.Stdin != nil {
		stdinLen = strconv.Itoa(len(req.Stdin))
	}
	var msg bytes.Buffer
	if len(script) <= maxLineScript && !strings.ContainsRune(script, '\n') {
		fmt.Fprintf(&msg, "%s l %s\n%s\n", id, stdinLen, script)
	} else {
		fmt.Fprintf(&msg, "%s %d %s\n%s", id, len(script), stdinLen, script)
	}
	msg.Write(req.Stdin)
	msg.WriteString(id + "\n")

	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	outDone, errDone := make(chan endResult, 1), make(chan endResult, 1)
	go func() {
		// Whatever comes before the agent's "started" line was written by
		// background processes of earlier commands: it goes to this one.
		if _, err := readUntil(s.stdout, []byte(id+" start"), stdout); err != nil {
			outDone <- endResult{err: err}
			return
		}
		rest, err := readUntil(s.stdout, []byte(id+" out "), stdout)
		status := -1
		if err == nil {
			status, err = strconv.Atoi(string(rest))
		}
		outDone <- endResult{status: status, started: true, err: err}
	}()
	go func() {
		_, err := readUntil(s.stderr, []byte(id+" err"), stderr)
		errDone <- endResult{err: err}
	}()
	// Write in the background: a command that does not read its stdin must
	// not block cancellation, and the agent reads the whole request first.
	written := make(chan error, 1)
	go func() {
		_, err := s.proc.Stdin.Write(msg.Bytes())
		written <- err
	}()

	var out, errRes endResult
	exited := s.proc.Exited()
	for outDone != nil || errDone != nil {
		select {
		case err := <-written:
			written = nil
			if err != nil {
				// The request did not arrive whole, so the agent will not
				// run it; the readers report the end of the session.
				s.broken = true
				s.proc.Kill()
			}
		case out = <-outDone:
			outDone = nil
		case errRes = <-errDone:
			errDone = nil
		case <-exited:
			// The agent's orbctl is gone. Output already in the pipes may
			// still hold the markers; processes left in the machine may keep
			// the pipes open, so do not wait for EOF for long.
			exited = nil
			s.broken = true
			time.AfterFunc(200*time.Millisecond, s.proc.Kill)
		case <-ctx.Done():
			s.broken = true
			s.kill(ctx, outDone, errDone)
			return -1, ctx.Err()
		}
	}
	if out.err != nil || errRes.err != nil {
		s.broken = true
		s.proc.Kill()
		if !out.started {
			return -1, errNotDelivered
		}
		return -1, s.endedError(errors.Join(out.err, errRes.err))
	}
	return out.status, nil
}

type endResult struct {
	status  int
	started bool // the agent said it started the command
	err     error
}

// kill stops a cancelled command inside the machine and ends the session.
// outDone/errDone are the readers still running (nil once they reported).
func (s *session) kill(ctx context.Context, outDone, errDone chan endResult) {
	ended := func(d time.Duration) bool {
		timeout := time.After(d)
		for outDone != nil || errDone != nil {
			select {
			case <-outDone:
				outDone = nil
			case <-errDone:
				errDone = nil
			case <-timeout:
				return false
			}
		}
		return true
	}
	// One orbctl run as root: TERM to the group, KILL after KillDelay to
	// whatever of the group is left (killScript). Bounded, so that a machine
	// that stopped answering cannot hold the cancellation up.
	killCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.client.KillDelay+10*time.Second)
	defer cancel()
	_, _ = s.client.Run(killCtx, orbctl.RunSpec{Machine: s.key.Machine, User: "root",
		Argv: []string{"sh", "-c", killScript(s.dir, s.client.KillDelay)}})
	// The group is gone, so the agent reports the end at once; a session that
	// does not (the kill could not run: the machine is gone) is ended here.
	if !ended(2 * time.Second) {
		s.proc.Kill()
	}
	// Otherwise the agent is idle again: the pool closes the session (broken)
	// gently, so that the agent removes its directory.
	// Kill closed the pipes: the readers return now. They write to the
	// caller's writers, so they must be done before run returns.
	ended(time.Hour)
}

// readUntil copies r to w until marker, and returns the rest of the marker's
// line (without its newline). The marker may be in the middle of a line: the
// agent writes it right after the command's output, so that a last line
// without a newline stays one, byte for byte. The nonce in the marker cannot
// come from a command, so a match is always the agent's.
//
// It works on whatever one read brought (up to the reader's 64 KiB), not line
// by line: heavy output costs a search and a write per chunk. It holds back
// only a tail that could be the start of the marker.
func readUntil(r *bufio.Reader, marker []byte, w io.Writer) ([]byte, error) {
	held := 0 // buffered bytes already searched, kept as a possible marker start
	for {
		buf, err := r.Peek(held + 1) // waits for at least one new byte
		if err != nil && err != bufio.ErrBufferFull {
			if len(buf) > 0 {
				w.Write(buf)
				r.Discard(len(buf))
			}
			return nil, err
		}
		buf, _ = r.Peek(r.Buffered())
		if i := bytes.Index(buf, marker); i >= 0 {
			if i > 0 {
				w.Write(buf[:i])
				r.Discard(i)
			}
			line, err := r.ReadSlice('\n') // the marker's line: short
			if err != nil {
				return nil, err
			}
			return bytes.TrimSuffix(line[len(marker):], []byte{'\n'}), nil
		}
		held = markerStart(buf, marker)
		if n := len(buf) - held; n > 0 {
			w.Write(buf[:n])
			r.Discard(n)
		}
	}
}

// markerStart is the length of the longest end of buf that begins marker.
func markerStart(buf, marker []byte) int {
	for k := min(len(marker)-1, len(buf)); k > 0; k-- {
		if bytes.HasSuffix(buf, marker[:k]) {
			return k
		}
	}
	return 0
}
