package remote

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// A Relay is `serve --mac HOST`: the shim speaks the unchanged protocol to it
// (docs/protocol.md, "Relay mode"), and it forwards every frame verbatim to
// `pyinfra-orbstack serve` on HOST over one ssh connection, and the remote's
// frames back, except file.put and file.get, whose local_path is on this
// Mac: those it runs itself, each as `pyinfra-orbstack transfer` in a new
// ssh session multiplexed over the first one (the connection master). When
// the connection drops, every pending and later request is answered with
// -32011 (rpc.CodeMacUnreachable) until the client closes stdin.
type Relay struct {
	opts    RelayOptions
	session Mac // how transfer sessions reach the Mac (through the master)
	ctlDir  string

	outMu  sync.Mutex
	out    io.Writer
	silent bool // the client is gone or the relay is stopping: write nothing more

	ssh       *exec.Cmd
	toRemote  *os.File
	stderr    *tail
	sshDone   chan struct{} // ssh exited and its end was handled
	remoteEOF chan struct{} // the remote's stdout ended
	finished  chan struct{} // the remote answered shutdown and ended

	mu               sync.Mutex
	pending          map[string]pendingCall // forwarded requests by idKey
	transfers        map[string]context.CancelFunc
	transfersWG      sync.WaitGroup
	heard            bool            // the remote sent a frame: failures are drops now
	dead             *jsonrpc2.Error // the answer to every request once the connection is gone
	shutdownAnswered bool
	finishOnce       sync.Once
	transferRuns     map[string]int // machine → transfers run on the Mac (their orbctl runs are not in the remote serve's stats)
}

// RelayOptions configure a Relay.
type RelayOptions struct {
	Mac     Mac
	Getenv  func(string) string // os.Getenv in production
	Logger  *log.Logger         // stderr
	Debug   bool                // also passed to the remote serve
	Version string              // this binary's, for messages
	// StopWait bounds the wait for ssh after the remote's stdin is closed
	// (default 5 s: the remote serve stops its commands within about 2 s).
	StopWait time.Duration
}

type pendingCall struct {
	rawID  json.RawMessage
	method string
}

// NewRelay returns a Relay for opts.Mac, which must pass Check.
func NewRelay(opts RelayOptions) *Relay {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Logger == nil {
		opts.Logger = log.New(os.Stderr, "pyinfra-orbstack: ", log.LstdFlags)
	}
	if opts.StopWait == 0 {
		opts.StopWait = 5 * time.Second
	}
	return &Relay{
		opts: opts, session: opts.Mac, stderr: &tail{max: 16 << 10},
		sshDone: make(chan struct{}), remoteEOF: make(chan struct{}), finished: make(chan struct{}),
		pending: map[string]pendingCall{}, transfers: map[string]context.CancelFunc{}, transferRuns: map[string]int{},
	}
}

// macError is a failure reaching the Mac in the protocol's shape.
func macError(e *Error) *jsonrpc2.Error {
	return rpc.NewError(rpc.CodeMacUnreachable, e.Message, rpc.ErrorData{Kind: "mac_unreachable", Mac: e.Mac, Reason: string(e.Kind)})
}

// Serve relays between the client (in, out) and the Mac until the client
// closes in, ctx ends (SIGINT), or the remote answered shutdown and ended.
// Then it closes the remote's stdin (the remote serve stops its commands),
// waits a bounded time for ssh, kills what is left and removes the control
// directory.
func (r *Relay) Serve(ctx context.Context, in io.Reader, out io.Writer) error {
	r.out = out
	r.start()
	clientGone := make(chan struct{})
	go func() {
		defer close(clientGone)
		r.readClient(in)
	}()
	select {
	case <-clientGone:
	case <-ctx.Done():
	case <-r.finished:
	}
	r.stop()
	return nil
}

// start runs ssh. A failure to start it is the answer to every request.
func (r *Relay) start() {
	m := r.opts.Mac
	master := m
	if r.opts.Mac.ConfiguredControlPath(r.opts.Getenv) == "" {
		dir, err := controlDir()
		if err != nil {
			r.opts.Logger.Printf("no private ssh control socket (%v): each transfer makes its own SSH connection", err)
		} else {
			r.ctlDir = dir
			master.ControlPath, master.Master = controlSocket(dir), true
			r.session.ControlPath = master.ControlPath
		}
	}
	args := []string{"serve"}
	if r.opts.Debug {
		args = append(args, "--debug")
	}
	cmd := exec.Command(SSHProgram(r.opts.Getenv), master.SSHArgs(r.opts.Getenv, args...)...)
	ownGroup(cmd)
	fail := func(err error) {
		r.dead = macError(&Error{Kind: Unreachable, Mac: m.Host, Message: fmt.Sprintf(
			"cannot run ssh to reach Mac %s: %v: install OpenSSH's client, or set %s to it", m.Host, err, EnvSSH)})
		close(r.remoteEOF)
		close(r.sshDone)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		fail(err)
		return
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		fail(err)
		return
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		fail(err)
		return
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		fail(err)
		return
	}
	if r.opts.Debug {
		r.opts.Logger.Printf("ssh (pid %d) to Mac %s: %s", cmd.Process.Pid, m.Host, strings.Join(cmd.Args, " "))
	}
	r.ssh, r.toRemote = cmd, inW
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		r.readStderr(errR)
	}()
	go r.readRemote(outR)
	go func() {
		err := cmd.Wait()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if code = exit.ExitCode(); code < 0 { // killed by a signal
				code = 255
			}
		}
		// Let the last frames and ssh's last words arrive (a child of ssh
		// may still hold the pipes: then they are not waited for).
		grace, cancel := context.WithTimeout(context.Background(), time.Second)
		select {
		case <-r.remoteEOF:
		case <-grace.Done():
		}
		select {
		case <-stderrDone:
		case <-grace.Done():
		}
		cancel()
		r.lost(code)
		close(r.sshDone)
	}()
}

func (r *Relay) readStderr(f *os.File) {
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if !remoteLog.MatchString(line) { // ssh's own words: what a failure is worded from
			r.stderr.add(line + "\n")
		}
		r.opts.Logger.Printf("Mac %s: %s", r.opts.Mac.Host, line)
	}
	io.Copy(io.Discard, f) // an overlong line ends the scanner, not ssh's pipe
}

// remoteLog is a log line of the remote binary (log.LstdFlags after its
// prefix), not a message of ssh's.
var remoteLog = regexp.MustCompile(`^pyinfra-orbstack( [a-z]+)?: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d `)

// lost handles the end of ssh: every pending request, and every later one,
// gets the error that says why.
func (r *Relay) lost(code int) {
	r.mu.Lock()
	if r.dead == nil {
		var e *Error
		if r.heard {
			e = Dropped(r.opts.Mac, r.stderr.String())
		} else {
			e = Classify(r.opts.Mac, code, r.stderr.String())
		}
		r.dead = macError(e)
	}
	dead := r.dead
	calls := r.pending
	r.pending = map[string]pendingCall{}
	finished := r.shutdownAnswered
	r.mu.Unlock()
	r.toRemote.Close()
	if finished {
		r.finish()
		return
	}
	r.opts.Logger.Printf("%s", dead.Message)
	for _, c := range calls {
		r.write(rpc.ErrorReply(c.rawID, dead))
	}
}

func (r *Relay) finish() { r.finishOnce.Do(func() { close(r.finished) }) }

// stop ends the relay in order: transfers cancelled, the remote's stdin
// closed, ssh waited for (boundedly), then killed, the control directory
// removed.
func (r *Relay) stop() {
	r.outMu.Lock()
	r.silent = true
	r.outMu.Unlock()
	r.mu.Lock()
	for _, cancel := range r.transfers {
		cancel()
	}
	r.mu.Unlock()
	waitFor(func() { r.transfersWG.Wait() }, 5*time.Second)
	if r.ssh != nil {
		r.toRemote.Close()
		select {
		case <-r.sshDone:
		case <-time.After(r.opts.StopWait):
			r.opts.Logger.Printf("ssh to Mac %s did not end within %s of closing its input: killing it", r.opts.Mac.Host, r.opts.StopWait)
			killGroup(r.ssh, syscall.SIGTERM)
			select {
			case <-r.sshDone:
			case <-time.After(time.Second):
				killGroup(r.ssh, syscall.SIGKILL)
				waitFor(func() { <-r.sshDone }, 3*time.Second)
			}
		}
	}
	if r.ctlDir != "" {
		os.RemoveAll(r.ctlDir)
	}
}

func waitFor(f func(), limit time.Duration) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

// write sends one frame to the client: one writer at a time.
func (r *Relay) write(body []byte) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	if r.silent {
		return
	}
	if err := rpc.WriteFrame(r.out, body); err != nil {
		r.silent = true // the client is gone; its stdin will end too
	}
}

func (r *Relay) forward(body []byte) {
	if r.toRemote == nil {
		return
	}
	if err := rpc.WriteFrame(r.toRemote, body); err != nil && r.opts.Debug {
		r.opts.Logger.Printf("cannot write to ssh: %v", err)
	}
}

// readClient reads the client's frames until its input ends.
func (r *Relay) readClient(in io.Reader) {
	br := bufio.NewReaderSize(in, 64<<10)
	for {
		body, err := rpc.ReadFrame(br)
		if err != nil {
			if reply := rpc.RefusalFrame(err); reply != nil {
				r.opts.Logger.Printf("refused a frame: %v; closing the connection", err)
				r.write(reply)
			}
			return
		}
		r.route(body)
	}
}

// envelope is what the relay reads of a message: its id and method.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method json.RawMessage `json:"method"`
}

// idKey is a request id as a map key: a string's value (its escapes may be
// written differently in the reply) or a number's digits. ok is false for an
// id the remote refuses anyway.
func idKey(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return "s" + s, true
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return "n" + string(raw), true
}

// route handles one frame from the client.
func (r *Relay) route(body []byte) {
	var m envelope
	var method string
	if json.Unmarshal(body, &m) != nil || json.Unmarshal(m.Method, &method) != nil {
		r.forward(body) // not a request: the remote says what is wrong with it
		return
	}
	if m.ID == nil { // a notification
		if method == rpc.NotifyCancelRequest && r.cancelTransfer(body) {
			return
		}
		r.forward(body)
		return
	}
	key, ok := idKey(m.ID)
	if !ok {
		r.forward(body)
		return
	}
	switch method {
	case rpc.MethodFilePut, rpc.MethodFileGet:
		r.startTransfer(key, m.ID, method, body)
		return
	case rpc.MethodInitialize:
		var req struct {
			Params *rpc.InitializeParams `json:"params"`
		}
		if json.Unmarshal(body, &req) == nil {
			var p rpc.InitializeParams
			if req.Params != nil {
				p = *req.Params
			}
			var e *jsonrpc2.Error
			if errors.As(rpc.CheckInitialize(p), &e) {
				r.write(rpc.ErrorReply(m.ID, e))
				return
			}
		}
	case rpc.MethodShutdown:
		// As a local binary does: the other requests are cancelled and
		// their replies sent before shutdown's.
		r.mu.Lock()
		for _, cancel := range r.transfers {
			cancel()
		}
		r.mu.Unlock()
		waitFor(r.transfersWG.Wait, 5*time.Second)
	}
	r.mu.Lock()
	if r.inFlight(key) {
		r.mu.Unlock()
		r.write(rpc.ErrorReply(m.ID, duplicate(m.ID)))
		return
	}
	if dead := r.dead; dead != nil {
		r.mu.Unlock()
		r.write(rpc.ErrorReply(m.ID, dead))
		return
	}
	r.pending[key] = pendingCall{rawID: m.ID, method: method}
	r.mu.Unlock()
	r.forward(body)
}

func (r *Relay) inFlight(key string) bool {
	_, forwarded := r.pending[key]
	_, transferring := r.transfers[key]
	return forwarded || transferring
}

func duplicate(rawID json.RawMessage) *jsonrpc2.Error {
	return rpc.NewError(jsonrpc2.CodeInvalidRequest, "request id "+string(rawID)+" is already in flight; ids must be unique",
		rpc.ErrorData{Kind: "invalid_request"})
}

// readRemote forwards the remote's frames to the client.
func (r *Relay) readRemote(f *os.File) {
	defer close(r.remoteEOF)
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	for {
		body, err := rpc.ReadFrame(br)
		if err != nil {
			if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
				r.opts.Logger.Printf("reading Mac %s's answers: %v", r.opts.Mac.Host, err)
				r.mu.Lock()
				if r.dead == nil {
					r.dead = macError(&Error{Kind: Failed, Mac: r.opts.Mac.Host, Message: fmt.Sprintf(
						"pyinfra-orbstack serve on Mac %s wrote something else than the protocol to its stdout (%v): "+
							"does a shell startup file there (~/.zshenv, ~/.bashrc) print text in non-interactive shells? "+
							"`ssh %s true` must print nothing", r.opts.Mac.Host, err, r.opts.Mac.Host)})
				}
				r.mu.Unlock()
				killGroup(r.ssh, syscall.SIGTERM)
			}
			// ssh ends with its remote command; one that does not (a child
			// holding the pipe) is not waited for.
			go func() {
				select {
				case <-r.sshDone:
				case <-time.After(3 * time.Second):
					killGroup(r.ssh, syscall.SIGKILL)
				}
			}()
			return
		}
		r.fromRemote(body)
	}
}

func (r *Relay) fromRemote(body []byte) {
	var m envelope
	err := json.Unmarshal(body, &m)
	r.mu.Lock()
	r.heard = true
	if err != nil || m.Method != nil || m.ID == nil { // a notification (command.output)
		r.mu.Unlock()
		r.write(body)
		return
	}
	key, _ := idKey(m.ID)
	call, found := r.pending[key]
	delete(r.pending, key)
	if found && call.method == rpc.MethodShutdown {
		r.shutdownAnswered = true
	}
	r.mu.Unlock()
	if found && call.method == rpc.MethodInitialize {
		if e := r.checkInitialized(body); e != nil {
			body = rpc.ErrorReply(call.rawID, e)
		}
	}
	if found && call.method == rpc.MethodStats {
		body = r.addTransferStats(body)
	}
	r.write(body)
}

// addTransferStats adds the transfers this relay ran on the Mac (each one
// `orbctl run` there, in a process of its own) to the remote serve's stats.
func (r *Relay) addTransferStats(body []byte) []byte {
	var resp struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      json.RawMessage  `json:"id"`
		Result  *rpc.StatsResult `json:"result"`
	}
	if json.Unmarshal(body, &resp) != nil || resp.Result == nil {
		return body
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.transferRuns) == 0 {
		return body
	}
	st := resp.Result
	if st.Orbctl == nil {
		st.Orbctl = map[string]int{}
	}
	if st.Machines == nil {
		st.Machines = map[string]*rpc.MachineStats{}
	}
	for machine, n := range r.transferRuns {
		st.Orbctl["run"] += n
		if st.Machines[machine] == nil {
			st.Machines[machine] = &rpc.MachineStats{}
		}
		st.Machines[machine].Transfers += n
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return body
	}
	return out
}

// checkInitialized turns the remote's answer to initialize into an error
// naming the Mac and the fix when the remote speaks another protocol or
// cannot stream transfers.
func (r *Relay) checkInitialized(body []byte) *jsonrpc2.Error {
	var resp struct {
		Result *rpc.InitializeResult `json:"result"`
		Error  *jsonrpc2.Error       `json:"error"`
	}
	if json.Unmarshal(body, &resp) != nil {
		return nil
	}
	host, version := r.opts.Mac.Host, r.opts.Version
	fix := fmt.Sprintf("install the same pyinfra-orbstack version on %s as here (%s): `pip install pyinfra-orbstack==%s` there, "+
		"or name the right binary in the host data orbstack_remote_binary", host, version, version)
	if e := resp.Error; e != nil && e.Code == rpc.CodeProtocolMismatch {
		var data map[string]any
		if e.Data != nil {
			json.Unmarshal(*e.Data, &data)
		}
		if data == nil {
			data = map[string]any{"kind": "protocol_mismatch"}
		}
		data["mac"] = host
		out := &jsonrpc2.Error{Code: e.Code, Message: fmt.Sprintf(
			"protocol mismatch: the pyinfra-orbstack on Mac %s speaks protocol %v, this Mac's speaks %d: %s",
			host, data["binary_protocol_version"], rpc.ProtocolVersion, fix)}
		out.SetError(data)
		return out
	}
	if res := resp.Result; res != nil {
		for _, c := range res.Capabilities {
			if c == rpc.CapTransferStream {
				return nil
			}
		}
		client := rpc.ProtocolVersion
		return rpc.NewError(rpc.CodeProtocolMismatch, fmt.Sprintf(
			"the pyinfra-orbstack on Mac %s (version %s) cannot stream file transfers to a relay (no %q capability): %s",
			host, res.BinaryVersion, rpc.CapTransferStream, fix),
			rpc.ErrorData{Kind: "protocol_mismatch", Mac: host, BinaryProtocolVersion: res.ProtocolVersion, ClientProtocolVersion: &client})
	}
	return nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, s...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
}

func (t *tail) Write(p []byte) (int, error) { t.add(string(p)); return len(p), nil }

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
