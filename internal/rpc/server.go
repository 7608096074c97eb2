package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/session"
)

// Options configure a Server.
type Options struct {
	Version string                      // the binary's version, reported by initialize
	Getenv  func(string) string         // os.Getenv in production; finds orbctl
	Logger  *log.Logger                 // stderr: stdout carries only the protocol
	Debug   bool                        // log every request's method and duration
	Client  func(string) *orbctl.Client // orbctl.New in production
}

// Server handles one connection. Requests run concurrently, each in its own
// goroutine, so every method must be safe for concurrent use, including two
// calls about the same machine.
type Server struct {
	opts Options

	orbctlMu sync.Mutex
	orbctl   *orbctl.Client

	mu       sync.Mutex
	closing  bool
	inflight map[jsonrpc2.ID]*request
	handlers sync.WaitGroup
	baseCtx  context.Context
	stop     context.CancelCauseFunc

	machineLocks sync.Map          // machine name → chan struct{} (a lock), serialises connect
	machines     machineCache      // one `orbctl list` for the connects of a run
	counts       invocationCounter // orbctl invocations, for the stats method

	sessions *session.Pool // pools sessions unless PYINFRA_ORBSTACK_SESSIONS=0
	// frames is the connection's stream, which the Conn writes through too:
	// notify writes encoded notifications there, between whole messages.
	frames jsonrpc2.ObjectStream
}

// EnvSessions turns command sessions off when "0" (docs/architecture.md,
// "Command sessions").
const EnvSessions = "PYINFRA_ORBSTACK_SESSIONS"

type request struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// NewServer returns a Server; zero Options fields get production defaults.
func NewServer(opts Options) *Server {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Logger == nil {
		opts.Logger = log.New(os.Stderr, "pyinfra-orbstack: ", log.LstdFlags)
	}
	if opts.Client == nil {
		opts.Client = orbctl.New
	}
	s := &Server{opts: opts, inflight: map[jsonrpc2.ID]*request{}}
	s.sessions = session.NewPool()
	s.sessions.Logf = opts.Logger.Printf
	s.sessions.Pooled = opts.Getenv(EnvSessions) != "0"
	return s
}

// Serve speaks the protocol on stream until the client closes it (EOF: the
// client is gone), calls shutdown, sends a frame there is no reading past
// (framing.go), or ctx ends. In-flight requests are cancelled (their orbctl
// children signalled) and waited for before it returns.
func (s *Server) Serve(ctx context.Context, stream io.ReadWriteCloser) error {
	s.baseCtx, s.stop = context.WithCancelCause(context.Background())
	s.frames = newFrameStream(stream, s.opts.Logger.Printf)
	conn := jsonrpc2.NewConn(ctx, s.frames, s, jsonrpc2.SetLogger(s.opts.Logger))
	select {
	case <-conn.DisconnectNotify():
	case <-ctx.Done():
		conn.Close()
	}
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.stop(errCancelled)
	s.handlers.Wait()
	s.sessions.Close()
	return nil
}

// Handle implements jsonrpc2.Handler. It runs on the connection's read loop,
// so it only registers the request (synchronously, so that a $/cancelRequest
// right behind it finds it) and hands the work to a goroutine.
func (s *Server) Handle(_ context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if req.Notif {
		s.handleNotification(req)
		return
	}
	ctx, cancel := context.WithCancelCause(s.baseCtx)
	r := &request{cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		cancel(errCancelled)
		return
	}
	if _, dup := s.inflight[req.ID]; dup {
		s.mu.Unlock()
		cancel(nil)
		_ = conn.ReplyWithError(context.Background(), req.ID, newError(jsonrpc2.CodeInvalidRequest,
			"request id "+req.ID.String()+" is already in flight; ids must be unique", ErrorData{Kind: "invalid_request"}))
		return
	}
	s.inflight[req.ID] = r
	s.handlers.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.handlers.Done()
		start := time.Now()
		result, err := s.dispatchSafely(ctx, conn, req)
		s.mu.Lock()
		delete(s.inflight, req.ID)
		s.mu.Unlock()
		if err != nil {
			rpcErr := s.describe(ctx, err)
			if s.opts.Debug {
				s.opts.Logger.Printf("%s #%s failed after %s: %s", req.Method, req.ID, time.Since(start).Round(time.Millisecond), rpcErr.Message)
			}
			_ = conn.ReplyWithError(context.Background(), req.ID, rpcErr)
		} else {
			if s.opts.Debug {
				s.opts.Logger.Printf("%s #%s done in %s", req.Method, req.ID, time.Since(start).Round(time.Millisecond))
			}
			_ = conn.Reply(context.Background(), req.ID, result)
		}
		cancel(nil)
		close(r.done)
		if req.Method == MethodShutdown && err == nil {
			conn.Close()
		}
	}()
}

func (s *Server) handleNotification(req *jsonrpc2.Request) {
	if req.Method != NotifyCancelRequest {
		s.opts.Logger.Printf("ignoring unknown notification %q", req.Method)
		return
	}
	var p CancelParams
	if req.Params == nil || json.Unmarshal(*req.Params, &p) != nil {
		s.opts.Logger.Printf("ignoring %s without a valid id", NotifyCancelRequest)
		return
	}
	s.mu.Lock()
	r := s.inflight[p.ID]
	s.mu.Unlock()
	if r != nil { // an unknown id has already finished: nothing to do
		r.cancel(errCancelled)
	}
}

// dispatchSafely turns a bug in one handler into an error reply for that
// request instead of a crash that would fail every host of the run.
func (s *Server) dispatchSafely(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logger.Printf("bug: %s panicked: %v\n%s", req.Method, r, debug.Stack())
			err = newError(jsonrpc2.CodeInternalError, fmt.Sprintf("internal error in %s: %v (a bug: please report it with the log above)", req.Method, r),
				ErrorData{Kind: "internal"})
		}
	}()
	return s.dispatch(ctx, conn, req)
}

func (s *Server) dispatch(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
	switch req.Method {
	case MethodInitialize:
		var p InitializeParams
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		return s.initialize(p)
	case MethodMachinesList:
		return s.machinesList(ctx)
	case MethodMachineConnect:
		var p MachineConnectParams
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		if err := checkTimeout(p.Timeout); err != nil {
			return nil, err
		}
		return s.machineConnect(ctx, p)
	case MethodCommandRun:
		var p CommandRunParams
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		if err := checkTimeout(p.Timeout); err != nil {
			return nil, err
		}
		return s.commandRun(ctx, req.ID, p)
	case MethodFilePut:
		var p FilePutParams
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		return s.filePut(ctx, p)
	case MethodFileGet:
		var p FileGetParams
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		return s.fileGet(ctx, p)
	case MethodShutdown:
		s.shutdown(req.ID)
		return nil, nil
	case MethodStats:
		return s.counts.result(), nil
	}
	return nil, newError(jsonrpc2.CodeMethodNotFound, "unknown method "+req.Method+" (see docs/protocol.md)",
		ErrorData{Kind: "method_not_found"})
}

// decode reads params into v; absent or null params leave v zero.
func decode(req *jsonrpc2.Request, v any) error {
	if req.Params == nil || string(*req.Params) == "null" {
		return nil
	}
	if err := json.Unmarshal(*req.Params, v); err != nil {
		return invalidParams("", "invalid params for %s: %v", req.Method, err)
	}
	return nil
}

// describe turns a handler error into its wire form, naming the machines that
// do exist when the one asked for does not.
func (s *Server) describe(ctx context.Context, err error) *jsonrpc2.Error {
	rpcErr := toRPCError(ctx, err)
	var oe *orbctl.Error
	if rpcErr.Code == CodeMachineNotFound && errors.As(err, &oe) {
		if c, cerr := s.client(); cerr == nil {
			listCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var data ErrorData
			_ = json.Unmarshal(*rpcErr.Data, &data)
			data.Available = c.Names(listCtx)
			if data.Available == nil {
				data.Available = []string{}
			}
			rpcErr.SetError(data)
		}
	}
	return rpcErr
}

// client finds orbctl on first use and keeps it; until one is found every call
// looks again, so installing OrbStack mid-session works.
func (s *Server) client() (*orbctl.Client, error) {
	s.orbctlMu.Lock()
	defer s.orbctlMu.Unlock()
	if s.orbctl != nil {
		return s.orbctl, nil
	}
	path, err := orbctl.Locate(s.opts.Getenv)
	if err != nil {
		return nil, err
	}
	s.orbctl = s.opts.Client(path)
	s.orbctl.NewCmd = s.counts.wrap(s.orbctl.NewCmd)
	if s.opts.Debug {
		s.orbctl.Trace = func(args []string, took time.Duration, err error) {
			if err != nil {
				s.opts.Logger.Printf("orbctl %s (%s): %v", strings.Join(args, " "), took.Round(time.Millisecond), err)
			} else {
				s.opts.Logger.Printf("orbctl %s (%s)", strings.Join(args, " "), took.Round(time.Millisecond))
			}
		}
	}
	return s.orbctl, nil
}

func (s *Server) initialize(p InitializeParams) (any, error) {
	if err := CheckInitialize(p); err != nil {
		return nil, err
	}
	res := InitializeResult{ProtocolVersion: ProtocolVersion, BinaryVersion: s.opts.Version, Capabilities: Capabilities, MaxFrame: MaxFrame,
		DefaultConnectTimeout: orbctl.DefaultReadyTimeout.Seconds()}
	if c, err := s.client(); err == nil {
		res.Orbctl = OrbctlStatus{Path: c.Path, Found: true}
	}
	return res, nil
}

// CheckInitialize refuses an initialize whose client speaks another protocol
// (a relay answers it itself, as a local binary does).
func CheckInitialize(p InitializeParams) error {
	if p.ProtocolVersion == nil {
		return invalidParams("protocol_version", "initialize needs protocol_version (this binary speaks %d)", ProtocolVersion)
	}
	if *p.ProtocolVersion != ProtocolVersion {
		return newError(CodeProtocolMismatch,
			"protocol mismatch: the pyinfra-orbstack binary speaks protocol "+itoa(ProtocolVersion)+
				" but the Python shim speaks "+itoa(*p.ProtocolVersion)+
				"; they come from different installs: reinstall pyinfra-orbstack, or point PYINFRA_ORBSTACK_BINARY at a matching binary",
			ErrorData{Kind: "protocol_mismatch", BinaryProtocolVersion: ProtocolVersion, ClientProtocolVersion: p.ProtocolVersion})
	}
	return nil
}

func (s *Server) machinesList(ctx context.Context) (any, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	machines, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	return MachinesListResult{Machines: machines}, nil
}

// shutdown cancels every other in-flight request and waits (boundedly) for
// them to reply, so the client sees their fate before the connection closes.
func (s *Server) shutdown(self jsonrpc2.ID) {
	s.mu.Lock()
	var others []*request
	for id, r := range s.inflight {
		if id != self {
			others = append(others, r)
			r.cancel(errCancelled)
		}
	}
	s.mu.Unlock()
	deadline := time.After(5 * time.Second)
	for _, r := range others {
		select {
		case <-r.done:
		case <-deadline:
			return
		}
	}
}

// notify sends a notification the binary encoded itself (encodeOutput). An
// error means the client is gone, which the Conn finds out on its own.
func (s *Server) notify(msg rawMessage) { _ = s.frames.WriteObject(msg) }
