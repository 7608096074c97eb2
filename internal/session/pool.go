package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// ErrUnavailable means the command was not run: no session could take it
// (sessions are off, the machine lacks a tool, the session could not start,
// the stdin or command is too large, or two sessions in a row ended before
// they started it). The caller runs it the per-call way instead; that runs it once.
var ErrUnavailable = errors.New("no command session available")

// MaxStdin is the largest stdin sent through a session; larger ones take the
// per-call path, which streams them.
const MaxStdin = 1 << 20

// MaxStdinBytewise is MaxStdin for agents that read a byte per read(2)
// (busybox): 64 KiB take them about 0.1 s.
const MaxStdinBytewise = 64 << 10

// MaxScript bounds the shell text of one command. The agent hands it to
// `sh -c` as one argument, and Linux refuses an argument of 128 KiB or more
// (MAX_ARG_STRLEN, counting its NUL); so does the login shell of a plain
// `orbctl run … sh -c COMMAND`, so no way of running a command takes more.
const MaxScript = 128<<10 - 1

// PerKey bounds the sessions of one (machine, user): concurrent commands
// beyond it wait for a free session.
const PerKey = 4

// DefaultReadyTimeout bounds starting a session (which may start a stopped
// machine, as `orbctl run` does).
const DefaultReadyTimeout = 60 * time.Second

// Pool keeps sessions per (machine, user) and hands each to one command at a
// time. The zero value is not usable: use NewPool.
type Pool struct {
	// Logf, when set, is told why a session could not be used (never the
	// command).
	Logf         func(format string, args ...any)
	ReadyTimeout time.Duration
	// Pooled keeps sessions for reuse (the default). Without it Run always
	// says ErrUnavailable and every command takes RunOnce
	// (PYINFRA_ORBSTACK_SESSIONS=0).
	Pooled bool

	mu      sync.Mutex
	keys    map[Key]*keyState
	closed  bool
	closing sync.WaitGroup // sessions being closed
	warming sync.WaitGroup // Warm calls under way
	// stop ends the starts of Warm calls when the pool closes.
	stop     context.Context
	stopWarm context.CancelFunc
}

type keyState struct {
	slots       chan struct{} // one token per session in use or starting
	idle        []*session
	unsupported error // set once the machine is known to lack a tool
	// warm is closed when the session Warm is starting for this key is
	// idle or failed (nil: none is starting).
	warm chan struct{}
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	p := &Pool{keys: map[Key]*keyState{}, ReadyTimeout: DefaultReadyTimeout, Pooled: true}
	p.stop, p.stopWarm = context.WithCancel(context.Background())
	return p
}

// Warm starts a session for key and leaves it idle, so that the first
// command for key does not wait for one (machine.connect calls it). It does
// nothing when a session for key is idle or being warmed already. Its error
// says why no session could start; Run would then have run the commands one
// orbctl call each, as it still will. A Run that finds no idle session while
// one warms waits for it rather than start a second.
func (p *Pool) Warm(ctx context.Context, c *orbctl.Client, key Key) error {
	if !p.Pooled {
		return fmt.Errorf("%w: sessions are off", ErrUnavailable)
	}
	ks, err := p.state(key)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("%w: the pool is closed", ErrUnavailable)
	}
	if len(ks.idle) > 0 || ks.warm != nil {
		p.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	ks.warm = done
	p.warming.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		ks.warm = nil
		p.mu.Unlock()
		close(done)
		p.warming.Done()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.stop, cancel)
	defer stop()
	s, err := start(ctx, c, key, p.ReadyTimeout)
	if err != nil {
		if errors.Is(err, errUnsupported) {
			p.mu.Lock()
			ks.unsupported = err
			p.mu.Unlock()
		}
		return err
	}
	p.put(ks, s)
	return nil
}

func (p *Pool) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

func (p *Pool) state(key Key) (*keyState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%w: the pool is closed", ErrUnavailable)
	}
	ks := p.keys[key]
	if ks == nil {
		ks = &keyState{slots: make(chan struct{}, PerKey)}
		p.keys[key] = ks
	}
	if ks.unsupported != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ks.unsupported)
	}
	return ks, nil
}

// Run runs req in a session for key, starting one if none is free. It returns
// the command's exit status, or ErrUnavailable (the command did not run), or
// the error of a command that did start: ctx's error when ctx ended (the
// command was killed in the machine), or an *orbctl.Error when the session
// died under it. A command is never run twice.
func (p *Pool) Run(ctx context.Context, c *orbctl.Client, key Key, req Request) (int, error) {
	if !p.Pooled {
		return -1, fmt.Errorf("%w: sessions are off", ErrUnavailable)
	}
	if len(req.Stdin) > MaxStdin {
		return -1, fmt.Errorf("%w: stdin larger than %d bytes", ErrUnavailable, MaxStdin)
	}
	if err := Check(req); err != nil {
		return -1, err
	}
	ks, err := p.state(key)
	if err != nil {
		return -1, err
	}
	select {
	case ks.slots <- struct{}{}:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	defer func() { <-ks.slots }()
	// A session found dead before it started the command (the machine was
	// stopped since its last command) is replaced once by a fresh one.
	for attempt := 0; ; attempt++ {
		s, err := p.take(ctx, c, key, ks)
		if err != nil {
			return -1, err
		}
		if s.bytewise && len(req.Stdin) > MaxStdinBytewise {
			p.put(ks, s)
			return -1, fmt.Errorf("%w: stdin larger than %d bytes for an agent that reads byte by byte", ErrUnavailable, MaxStdinBytewise)
		}
		code, err := s.run(ctx, req)
		p.put(ks, s)
		if !errors.Is(err, errNotDelivered) {
			return code, err
		}
		if attempt == 1 {
			return -1, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
}

// take returns an idle live session for key, or the one Warm is starting, or
// starts one.
func (p *Pool) take(ctx context.Context, c *orbctl.Client, key Key, ks *keyState) (*session, error) {
	p.mu.Lock()
	for {
		for len(ks.idle) > 0 {
			s := ks.idle[len(ks.idle)-1]
			ks.idle = ks.idle[:len(ks.idle)-1]
			if s.alive() && s.client == c {
				p.mu.Unlock()
				return s, nil
			}
			p.closeAsync(s)
		}
		warm := ks.warm
		if warm == nil {
			break
		}
		p.mu.Unlock()
		select {
		case <-warm:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
	}
	p.mu.Unlock()
	s, err := start(ctx, c, key, p.ReadyTimeout)
	if err == nil {
		return s, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if errors.Is(err, errUnsupported) {
		p.mu.Lock()
		ks.unsupported = err
		p.mu.Unlock()
	}
	p.logf("no command session for machine %s: %v; running commands one orbctl call each", key.Machine, err)
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// put returns s to the idle list, or ends it when it must not be reused.
func (p *Pool) put(ks *keyState, s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !s.alive() {
		p.closeAsync(s)
		return
	}
	ks.idle = append(ks.idle, s)
}

// closeAsync ends s in the background; Close waits for it.
func (p *Pool) closeAsync(s *session) {
	p.closing.Add(1)
	go func() {
		defer p.closing.Done()
		s.close()
	}()
}

// Close ends every idle session and makes later Runs return ErrUnavailable;
// sessions in use end when their command does. It waits until every session
// it ended or was ending has exited (bounded by their close grace), so that
// no orbctl child outlives the server.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.stopWarm()
	p.warming.Wait() // a session warmed meanwhile was closed by put
	p.mu.Lock()
	var idle []*session
	for _, ks := range p.keys {
		idle = append(idle, ks.idle...)
		ks.idle = nil
	}
	p.mu.Unlock()
	for _, s := range idle {
		p.closeAsync(s)
	}
	p.closing.Wait()
}
