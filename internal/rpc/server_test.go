package rpc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// session is a real jsonrpc2 client connected to a Server over a pipe.
type session struct {
	t    *testing.T
	conn *jsonrpc2.Conn
	done chan struct{}

	mu     sync.Mutex
	output map[string][]CommandOutput // by request id
}

func (s *session) Handle(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if req.Method != NotifyCommandOutput {
		return
	}
	var o CommandOutput
	if err := json.Unmarshal(*req.Params, &o); err != nil {
		s.t.Errorf("bad command.output: %v", err)
		return
	}
	s.mu.Lock()
	s.output[o.RequestID.String()] = append(s.output[o.RequestID.String()], o)
	s.mu.Unlock()
}

// startServer serves a Server on one end of a pipe, with orbctl found through
// getenv, and returns a client session on the other end.
func startServer(t *testing.T, env map[string]string) *session {
	t.Helper()
	serverEnd, clientEnd := net.Pipe()
	srv := NewServer(Options{
		Version: "1.2.3-test",
		Getenv:  func(k string) string { return env[k] },
		Logger:  log.New(io.Discard, "", 0),
		Client: func(path string) *orbctl.Client {
			c := orbctl.New(path)
			c.KillDelay = 500 * time.Millisecond
			return c
		},
	})
	s := &session{t: t, done: make(chan struct{}), output: map[string][]CommandOutput{}}
	go func() {
		defer close(s.done)
		srv.Serve(context.Background(), serverEnd)
	}()
	s.conn = jsonrpc2.NewConn(context.Background(), jsonrpc2.NewBufferedStream(clientEnd, jsonrpc2.VSCodeObjectCodec{}), s)
	t.Cleanup(func() {
		s.conn.Close()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10s of the client closing the connection")
		}
	})
	return s
}

// withFake serves against the fake orbctl, with the given machines ("name" →
// "running"/"stopped").
func withFake(t *testing.T, machines map[string]string) *session {
	path := orbctltest.Fake(t)
	for name, state := range machines {
		orbctltest.AddMachine(t, name, state)
	}
	return startServer(t, map[string]string{orbctl.EnvOverride: path, "HOME": t.TempDir()})
}

func (s *session) call(method string, params, result any) *jsonrpc2.Error {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.conn.Call(ctx, method, params, result)
	if err == nil {
		return nil
	}
	var rpcErr *jsonrpc2.Error
	if errors.As(err, &rpcErr) {
		return rpcErr
	}
	s.t.Fatalf("%s: %v", method, err)
	return nil
}

func (s *session) lines(id uint64) []CommandOutput {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output[jsonrpc2.ID{Num: id}.String()]
}

func errorData(t *testing.T, e *jsonrpc2.Error) ErrorData {
	t.Helper()
	var d ErrorData
	if e.Data == nil {
		t.Fatalf("error %d %q has no data", e.Code, e.Message)
	}
	if err := json.Unmarshal(*e.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func wantError(t *testing.T, e *jsonrpc2.Error, code int64, kind string) ErrorData {
	t.Helper()
	if e == nil {
		t.Fatalf("got success, want error %d (%s)", code, kind)
	}
	if e.Code != code {
		t.Fatalf("got error %d %q, want %d (%s)", e.Code, e.Message, code, kind)
	}
	d := errorData(t, e)
	if d.Kind != kind {
		t.Fatalf("got kind %q, want %q (message %q)", d.Kind, kind, e.Message)
	}
	return d
}

func TestInitializeReportsVersionsAndOrbctl(t *testing.T) {
	s := withFake(t, nil)
	var res InitializeResult
	if e := s.call(MethodInitialize, map[string]any{"protocol_version": 1, "client_version": "0.1.0"}, &res); e != nil {
		t.Fatal(e)
	}
	if res.ProtocolVersion != 1 || res.BinaryVersion != "1.2.3-test" || !res.Orbctl.Found || res.Orbctl.Path == "" {
		t.Fatalf("unexpected initialize result %+v", res)
	}
}

func TestInitializeRejectsAnotherProtocolVersion(t *testing.T) {
	s := withFake(t, nil)
	e := s.call(MethodInitialize, map[string]any{"protocol_version": 2}, nil)
	d := wantError(t, e, CodeProtocolMismatch, "protocol_mismatch")
	if d.BinaryProtocolVersion != 1 || d.ClientProtocolVersion == nil || *d.ClientProtocolVersion != 2 {
		t.Fatalf("mismatch data %+v", d)
	}
	if !strings.Contains(e.Message, "different installs") {
		t.Fatalf("message does not say what to do: %q", e.Message)
	}
}

func TestMissingOrbctlIsReportedWithWhereWeLooked(t *testing.T) {
	s := startServer(t, map[string]string{"HOME": t.TempDir(), "PATH": ""})
	t.Setenv("PATH", t.TempDir())
	var res InitializeResult
	if e := s.call(MethodInitialize, map[string]any{"protocol_version": 1}, &res); e != nil {
		t.Fatal(e)
	}
	if res.Orbctl.Found {
		t.Fatalf("orbctl reported found at %q", res.Orbctl.Path)
	}
	d := wantError(t, s.call(MethodMachinesList, nil, nil), CodeOrbctlNotFound, "orbctl_not_found")
	if len(d.Searched) == 0 {
		t.Fatal("searched is empty")
	}
}

func TestMachinesList(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running", "db": "stopped"})
	var res MachinesListResult
	if e := s.call(MethodMachinesList, nil, &res); e != nil {
		t.Fatal(e)
	}
	got := map[string]string{}
	for _, m := range res.Machines {
		got[m.Name] = m.State + "/" + m.Distro + "/" + m.DefaultUser
	}
	if got["web"] != "running/debian/tester" || got["db"] != "stopped/debian/tester" || len(got) != 2 {
		t.Fatalf("machines %v", got)
	}
}

func TestConnectStartsAStoppedMachine(t *testing.T) {
	s := withFake(t, map[string]string{"web": "stopped"})
	var res MachineConnectResult
	if e := s.call(MethodMachineConnect, map[string]any{"machine": "web"}, &res); e != nil {
		t.Fatal(e)
	}
	if !res.Started || res.Created || res.Machine.State != "running" || res.Machine.IP4 == "" {
		t.Fatalf("connect result %+v", res)
	}
	// Connecting again finds it running and starts nothing.
	if e := s.call(MethodMachineConnect, map[string]any{"machine": "web"}, &res); e != nil {
		t.Fatal(e)
	}
	if res.Started {
		t.Fatal("a running machine was reported started")
	}
}

func TestConnectToAMissingMachineNamesTheOnesThatExist(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running", "db": "running"})
	d := wantError(t, s.call(MethodMachineConnect, map[string]any{"machine": "wbe"}, nil), CodeMachineNotFound, "machine_not_found")
	if d.Machine != "wbe" || strings.Join(d.Available, ",") != "db,web" {
		t.Fatalf("data %+v", d)
	}
	if !strings.Contains(d.OrbctlStderr, "machine not found: 'wbe'") {
		t.Fatalf("orbctl's own message lost: %+v", d)
	}
}

func TestConnectCreatesAMissingMachineWhenAsked(t *testing.T) {
	s := withFake(t, nil)
	var res MachineConnectResult
	e := s.call(MethodMachineConnect, map[string]any{"machine": "fresh", "create": map[string]any{"image": "debian:bookworm"}}, &res)
	if e != nil {
		t.Fatal(e)
	}
	if !res.Created || res.Machine.Name != "fresh" || res.Machine.State != "running" {
		t.Fatalf("connect result %+v", res)
	}
}

func TestCommandRunStreamsLinesInOrderAndReturnsTheExitCode(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	var res CommandRunResult
	cmd := "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; sleep 0.1; printf 'no newline' >&2; exit 3"
	if e := s.call(MethodCommandRun, map[string]any{"machine": "web", "command": cmd}, &res); e != nil {
		t.Fatal(e)
	}
	if res.ExitCode != 3 {
		t.Fatalf("exit code %d, want 3", res.ExitCode)
	}
	var got []string
	for _, o := range s.lines(0) {
		got = append(got, o.Stream+":"+o.Line)
	}
	want := "stdout:one|stderr:two|stdout:three|stderr:no newline"
	if strings.Join(got, "|") != want {
		t.Fatalf("output %q, want %q", strings.Join(got, "|"), want)
	}
}

func TestCommandRunPassesEnvStdinAndWorkdir(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	dir := t.TempDir()
	var res CommandRunResult
	e := s.call(MethodCommandRun, map[string]any{
		"machine": "web", "workdir": dir,
		"command":   `printf '%s|%s|' "$GREETING" "$(pwd)"; cat`,
		"env":       map[string]string{"GREETING": "hello world; $(not expanded)"},
		"stdin_b64": base64.StdEncoding.EncodeToString([]byte("from stdin")),
	}, &res)
	if e != nil {
		t.Fatal(e)
	}
	lines := s.lines(0)
	if len(lines) != 1 || lines[0].Line != "hello world; $(not expanded)|"+dir+"|from stdin" {
		t.Fatalf("output %+v", lines)
	}
}

func TestCommandRunRejectsABadEnvName(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	e := s.call(MethodCommandRun, map[string]any{"machine": "web", "command": "true", "env": map[string]string{"A B": "x"}}, nil)
	wantError(t, e, jsonrpc2.CodeInvalidParams, "invalid_params")
}

func TestCommandRunOnAMissingMachine(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	// orbctl's run exits 1 in silence for a missing machine; that must not
	// look like the command's own exit status.
	d := wantError(t, s.call(MethodCommandRun, map[string]any{"machine": "gone", "command": "true"}, nil), CodeMachineNotFound, "machine_not_found")
	if strings.Join(d.Available, ",") != "web" {
		t.Fatalf("available %v", d.Available)
	}
}

func TestCommandRunTimeoutKillsTheCommand(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	marker := filepath.Join(t.TempDir(), "survived")
	start := time.Now()
	e := s.call(MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 1; touch " + marker, "timeout": 0.3}, nil)
	wantError(t, e, CodeTimeout, "timeout")
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("timeout of 0.3s took %s", took)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command kept running after its timeout")
	}
}

func TestCancelRequestStopsACommand(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := s.conn.DispatchCall(ctx, MethodCommandRun, map[string]any{"machine": "web", "command": "echo started; sleep 30"})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.lines(0)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("command never started")
		}
	}
	if err := s.conn.Notify(ctx, NotifyCancelRequest, map[string]any{"id": 0}); err != nil {
		t.Fatal(err)
	}
	err = w.Wait(ctx, nil)
	var rpcErr *jsonrpc2.Error
	if !errors.As(err, &rpcErr) {
		t.Fatalf("got %v, want a cancelled error", err)
	}
	wantError(t, rpcErr, CodeCancelled, "cancelled")
}

func TestConcurrentCommandsRunInParallel(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running", "db": "running"})
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			machine := []string{"web", "db"}[i%2]
			var res CommandRunResult
			if e := s.call(MethodCommandRun, map[string]any{"machine": machine, "command": "sleep 0.5"}, &res); e != nil {
				t.Error(e)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("6 concurrent 0.5s commands took %s: requests are serialised", took)
	}
}

func TestFilePutAndGetRoundTrip(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	dir := t.TempDir()
	local := filepath.Join(dir, "in")
	content := []byte("line one\n\x00binary\xff\nno newline")
	if err := os.WriteFile(local, content, 0o600); err != nil {
		t.Fatal(err)
	}
	remoteDir := t.TempDir()
	remote := filepath.Join(remoteDir, "app.conf")
	var res FileResult
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": remote, "mode": "640"}, &res); e != nil {
		t.Fatal(e)
	}
	if res.Size != int64(len(content)) {
		t.Fatalf("size %d", res.Size)
	}
	fi, err := os.Stat(remote)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %o, want 640", fi.Mode().Perm())
	}
	// Replacing it without a mode keeps the existing mode.
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": remote}, &res); e != nil {
		t.Fatal(e)
	}
	if fi, _ := os.Stat(remote); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %o after replace, want 640 kept", fi.Mode().Perm())
	}
	back := filepath.Join(dir, "out")
	if e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": remote, "local_path": back}, &res); e != nil {
		t.Fatal(e)
	}
	got, _ := os.ReadFile(back)
	if string(got) != string(content) {
		t.Fatalf("round trip changed the bytes: %q", got)
	}
	entries, _ := os.ReadDir(remoteDir)
	if len(entries) != 1 {
		t.Fatalf("temp files left next to the destination: %v", entries)
	}
	if _, err := os.Stat(back + ".part"); err == nil {
		t.Fatal(".part file left behind")
	}
}

func TestFilePutFailureLeavesNoTempAndSaysWhy(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	local := filepath.Join(t.TempDir(), "in")
	os.WriteFile(local, []byte("x"), 0o600)
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": "/nonexistent-dir/x"}, nil)
	wantError(t, e, CodeIOError, "io_error")
	if !strings.Contains(e.Message, "No such file or directory") {
		t.Fatalf("message lacks the remote error: %q", e.Message)
	}
}

func TestFileGetOfAMissingFile(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	local := filepath.Join(t.TempDir(), "out")
	e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": "/nonexistent-file", "local_path": local}, nil)
	wantError(t, e, CodeIOError, "io_error")
	if !strings.Contains(e.Message, "No such file or directory") {
		t.Fatalf("message lacks the remote error: %q", e.Message)
	}
	if _, err := os.Stat(local + ".part"); err == nil {
		t.Fatal(".part file left behind")
	}
}

func TestUnknownMethod(t *testing.T) {
	s := withFake(t, nil)
	wantError(t, s.call("machine.explode", nil, nil), jsonrpc2.CodeMethodNotFound, "method_not_found")
}

func TestShutdownRepliesThenCloses(t *testing.T) {
	s := withFake(t, nil)
	if e := s.call(MethodShutdown, nil, nil); e != nil {
		t.Fatal(e)
	}
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("server still serving 5s after shutdown")
	}
}
