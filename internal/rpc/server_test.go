package rpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// testConn is a real jsonrpc2 client connected to a Server over a pipe.
type testConn struct {
	t    *testing.T
	conn *jsonrpc2.Conn
	done chan struct{}

	mu     sync.Mutex
	output map[string][]CommandOutput // by request id
	nextID uint64
	sim    bool // the orbctl is the simulator (machines are real)
}

func (s *testConn) Handle(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
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
// getenv, and returns a client connection on the other end.
func startServer(t *testing.T, env map[string]string) *testConn {
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
	s := &testConn{t: t, done: make(chan struct{}), output: map[string][]CommandOutput{}}
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

// withMachines serves against an orbctl with exactly these machines ("name" →
// "running"/"stopped"): the simulator when it runs here, otherwise the fake.
func withMachines(t *testing.T, machines map[string]string) *testConn {
	path, sim := orbctltest.WithMachines(t, machines)
	s := startServer(t, map[string]string{orbctl.EnvOverride: path, "HOME": t.TempDir()})
	s.sim = sim
	return s
}

// withFake serves against the fake orbctl, for what the simulator cannot do
// on demand.
func withFake(t *testing.T, machines map[string]string) *testConn {
	path := orbctltest.Fake(t)
	for name, state := range machines {
		orbctltest.AddMachine(t, name, state)
	}
	return startServer(t, map[string]string{orbctl.EnvOverride: path, "HOME": t.TempDir()})
}

func (s *testConn) call(method string, params, result any) *jsonrpc2.Error {
	s.t.Helper()
	_, e := s.callID(method, params, result)
	return e
}

// callID makes a call and returns its request id with the error.
func (s *testConn) callID(method string, params, result any) (uint64, *jsonrpc2.Error) {
	s.t.Helper()
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := s.conn.Call(ctx, method, params, result, jsonrpc2.PickID(jsonrpc2.ID{Num: id}))
	if err == nil {
		return id, nil
	}
	var rpcErr *jsonrpc2.Error
	if errors.As(err, &rpcErr) {
		return id, rpcErr
	}
	s.t.Fatalf("%s: %v", method, err)
	return id, nil
}

// sh runs a shell command in a machine and returns its stdout and exit code.
func (s *testConn) sh(machine, user, command string) (string, int) {
	s.t.Helper()
	var res CommandRunResult
	id, e := s.callID(MethodCommandRun, map[string]any{"machine": machine, "user": user, "command": command}, &res)
	if e != nil {
		s.t.Fatalf("%s on %s: %v", command, machine, e)
	}
	var out []string
	for _, o := range s.lines(id) {
		if o.Stream == "stdout" {
			out = append(out, o.Line)
		}
	}
	return strings.Join(out, "\n"), res.ExitCode
}

// outputLine is one line of a command's output, as a client makes it of the
// runs it was sent (docs/protocol.md, "command.output").
type outputLine struct{ Stream, Line string }

// lines returns the lines of request id's output, made the way the shim makes
// them (OutputLines in _rpc.py): each stream's text split at "\n", lines in
// the order they were completed, then the unfinished last line of stdout and
// of stderr. Call it after the request's reply.
func (s *testConn) lines(id uint64) []outputLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []outputLine
	pending := map[string]string{}
	for _, n := range s.output[jsonrpc2.ID{Num: id}.String()] {
		for _, run := range n.Output {
			parts := strings.Split(pending[run.Stream]+run.Text, "\n")
			pending[run.Stream] = parts[len(parts)-1]
			for _, line := range parts[:len(parts)-1] {
				lines = append(lines, outputLine{run.Stream, line})
			}
		}
	}
	for _, stream := range []string{"stdout", "stderr"} {
		if pending[stream] != "" {
			lines = append(lines, outputLine{stream, pending[stream]})
		}
	}
	return lines
}

// notificationsOf returns request id's command.output notifications as sent.
func (s *testConn) notificationsOf(id uint64) []CommandOutput {
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
	s := withMachines(t, nil)
	var res InitializeResult
	if e := s.call(MethodInitialize, map[string]any{"protocol_version": ProtocolVersion, "client_version": "0.1.0"}, &res); e != nil {
		t.Fatal(e)
	}
	if res.ProtocolVersion != ProtocolVersion || res.BinaryVersion != "1.2.3-test" || !res.Orbctl.Found || res.Orbctl.Path == "" {
		t.Fatalf("unexpected initialize result %+v", res)
	}
}

func TestInitializeRejectsAnotherProtocolVersion(t *testing.T) {
	s := withFake(t, nil)
	e := s.call(MethodInitialize, map[string]any{"protocol_version": 1}, nil) // a shim of the first protocol
	d := wantError(t, e, CodeProtocolMismatch, "protocol_mismatch")
	if d.BinaryProtocolVersion != ProtocolVersion || d.ClientProtocolVersion == nil || *d.ClientProtocolVersion != 1 {
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
	if e := s.call(MethodInitialize, map[string]any{"protocol_version": ProtocolVersion}, &res); e != nil {
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
	s := withMachines(t, map[string]string{"web": "running", "db": "stopped"})
	var res MachinesListResult
	if e := s.call(MethodMachinesList, nil, &res); e != nil {
		t.Fatal(e)
	}
	got := map[string]string{}
	for _, m := range res.Machines {
		got[m.Name] = m.State + "/" + m.Distro
		if m.ID == "" || m.DefaultUser == "" || m.Arch == "" {
			t.Errorf("machine %s lacks facts: %+v", m.Name, m)
		}
	}
	if got["web"] != "running/debian" || got["db"] != "stopped/debian" || len(got) != 2 {
		t.Fatalf("machines %v", got)
	}
}

func TestConnectStartsAStoppedMachine(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "stopped"})
	var res MachineConnectResult
	if e := s.call(MethodMachineConnect, map[string]any{"machine": "web"}, &res); e != nil {
		t.Fatal(e)
	}
	if !res.Started || res.Created || res.Machine.State != "running" || res.Machine.IP4 == "" {
		t.Fatalf("connect result %+v", res)
	}
	if out, code := s.sh("web", "", "echo ready"); out != "ready" || code != 0 {
		t.Fatalf("machine does not answer after connect: %q %d", out, code)
	}
	// Connecting again finds it running and starts nothing.
	if e := s.call(MethodMachineConnect, map[string]any{"machine": "web"}, &res); e != nil {
		t.Fatal(e)
	}
	if res.Started {
		t.Fatal("a running machine was reported started")
	}
}

func TestConnectWithoutStartLeavesAStoppedMachineStopped(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "stopped"})
	var res MachineConnectResult
	if e := s.call(MethodMachineConnect, map[string]any{"machine": "web", "start": false}, &res); e != nil {
		t.Fatal(e)
	}
	if res.Started || res.Machine.State != "stopped" {
		t.Fatalf("connect result %+v", res)
	}
}

func TestConcurrentConnectsToOneStoppedMachine(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "stopped"})
	var wg sync.WaitGroup
	started := make(chan bool, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res MachineConnectResult
			if e := s.call(MethodMachineConnect, map[string]any{"machine": "web"}, &res); e != nil {
				t.Error(e)
				return
			}
			started <- res.Started
		}()
	}
	wg.Wait()
	close(started)
	n := 0
	for st := range started {
		if st {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 4 concurrent connects started the machine, want exactly 1", n)
	}
}

func TestConnectToAMissingMachineNamesTheOnesThatExist(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running", "db": "running"})
	d := wantError(t, s.call(MethodMachineConnect, map[string]any{"machine": "wbe"}, nil), CodeMachineNotFound, "machine_not_found")
	if d.Machine != "wbe" || strings.Join(d.Available, ",") != "db,web" && strings.Join(d.Available, ",") != "web,db" {
		t.Fatalf("data %+v", d)
	}
	if !strings.Contains(d.OrbctlStderr, "machine not found: 'wbe'") {
		t.Fatalf("orbctl's own message lost: %+v", d)
	}
}

func TestConnectCreatesAMissingMachineWhenAsked(t *testing.T) {
	s := withMachines(t, nil)
	var res MachineConnectResult
	e := s.call(MethodMachineConnect, map[string]any{"machine": "fresh", "create": map[string]any{"image": "debian:bookworm", "user": "deploy"}}, &res)
	if e != nil {
		t.Fatal(e)
	}
	if !res.Created || res.Machine.Name != "fresh" || res.Machine.State != "running" {
		t.Fatalf("connect result %+v", res)
	}
	if s.sim {
		if out, _ := s.sh("fresh", "", "id -un"); out != "deploy" {
			t.Fatalf("default user %q, want deploy", out)
		}
	}
}

func TestConnectCreatesAnIsolatedMachineWithUserDataAndMounts(t *testing.T) {
	s := withMachines(t, nil)
	if !s.sim {
		t.Skip("needs the simulator")
	}
	dir := t.TempDir()
	userData := filepath.Join(dir, "user-data")
	if err := os.WriteFile(userData, []byte("#!/bin/sh\necho ran > /root/user-data-ran\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.txt"), []byte("mounted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var res MachineConnectResult
	e := s.call(MethodMachineConnect, map[string]any{"machine": "boxed", "create": map[string]any{
		"image": "debian", "user_data": userData, "isolated": true, "isolate_network": true,
		"cpus": 2, "memory": "2G", "disk": "16G", "mounts": []string{dir + ":/src"}}}, &res)
	if e != nil {
		t.Fatal(e)
	}
	if !res.Created || !res.Machine.Isolated || res.Machine.State != "running" {
		t.Fatalf("connect result %+v, want a created, isolated, running machine", res)
	}
	out, _ := s.sh("boxed", "root", "test -e /mnt/mac && echo /mnt/mac is there; cat /root/user-data-ran /src/app.txt")
	if out != "ran\nmounted" {
		t.Fatalf("inside the machine: %q, want the user data run, the mount and no /mnt/mac", out)
	}
}

func TestConnectChecksTheCreateParam(t *testing.T) {
	s := withFake(t, nil)
	for param, create := range map[string]map[string]any{
		"create.image":     {"image": ""},
		"create.user_data": {"image": "debian", "user_data": "cloud-init.yml"},
		"create.cpus":      {"image": "debian", "cpus": -2},
		"create.mounts":    {"image": "debian", "mounts": []string{"/Users/me/src:/src"}},
	} {
		e := s.call(MethodMachineConnect, map[string]any{"machine": "fresh", "create": create}, nil)
		if d := wantError(t, e, jsonrpc2.CodeInvalidParams, "invalid_params"); d.Param != param {
			t.Errorf("%v: param %q, want %q (%s)", create, d.Param, param, e.Message)
		}
	}
	e := s.call(MethodMachineConnect, map[string]any{"machine": "fresh", "create": map[string]any{"image": "debian", "memory": "-1G"}}, nil)
	if wantError(t, e, CodeBadArgument, "bad_argument"); !strings.Contains(e.Message, "must not start with '-'") {
		t.Fatalf("message %q", e.Message)
	}
}

func TestConnectReportsAMachineThatNeverAnswers(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	t.Setenv("FAKE_ORBCTL_RUN_FAIL", "ssh: connect: connection refused")
	d := wantError(t, s.call(MethodMachineConnect, map[string]any{"machine": "web", "timeout": 0.5}, nil), CodeNotReady, "not_ready")
	if d.Machine != "web" {
		t.Fatalf("data %+v", d)
	}
}

func TestConnectTimeoutCoversAStartThatHangs(t *testing.T) {
	s := withFake(t, map[string]string{"web": "stopped"})
	t.Setenv("FAKE_ORBCTL_SLOW_START", "5")
	start := time.Now()
	e := s.call(MethodMachineConnect, map[string]any{"machine": "web", "timeout": 0.5}, nil)
	wantError(t, e, CodeNotReady, "not_ready")
	if !strings.Contains(e.Message, "did not start within 500ms") {
		t.Fatalf("message %q", e.Message)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a 0.5s connect timeout took %s", took)
	}
}

func TestOrbStackThatCannotStartIsReported(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	t.Setenv("ORBSIM_ORBSTACK", "broken") // the simulator's failed auto-start
	t.Setenv("FAKE_ORBCTL_FAIL", "failed to start OrbStack: simulated start failure")
	wantError(t, s.call(MethodMachinesList, nil, nil), CodeOrbStackNotRunning, "orbstack_not_running")
	d := wantError(t, s.call(MethodMachineConnect, map[string]any{"machine": "web"}, nil), CodeOrbStackNotRunning, "orbstack_not_running")
	if !strings.Contains(d.OrbctlStderr, "failed to start OrbStack") {
		t.Fatalf("orbctl's message lost: %+v", d)
	}
}

func TestCommandRunStreamsLinesInOrderAndReturnsTheExitCode(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	var res CommandRunResult
	cmd := "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; sleep 0.2; printf 'no newline' >&2; exit 3"
	id, e := s.callID(MethodCommandRun, map[string]any{"machine": "web", "command": cmd}, &res)
	if e != nil {
		t.Fatal(e)
	}
	if res.ExitCode != 3 {
		t.Fatalf("exit code %d, want 3", res.ExitCode)
	}
	var got []string
	for _, o := range s.lines(id) {
		got = append(got, o.Stream+":"+o.Line)
	}
	want := "stdout:one|stderr:two|stdout:three|stderr:no newline"
	if strings.Join(got, "|") != want {
		t.Fatalf("output %q, want %q", strings.Join(got, "|"), want)
	}
}

func TestCommandRunPassesEnvStdinAndWorkdir(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	dir, _ := s.sh("web", "", "mktemp -d")
	var res CommandRunResult
	id, e := s.callID(MethodCommandRun, map[string]any{
		"machine": "web", "workdir": dir,
		"command":   `printf '%s|%s|' "$GREETING" "$(pwd)"; cat`,
		"env":       map[string]string{"GREETING": "hello world; $(not expanded)"},
		"stdin_b64": base64.StdEncoding.EncodeToString([]byte("from stdin")),
	}, &res)
	if e != nil {
		t.Fatal(e)
	}
	lines := s.lines(id)
	if len(lines) != 1 || lines[0].Line != "hello world; $(not expanded)|"+dir+"|from stdin" {
		t.Fatalf("output %+v", lines)
	}
}

func TestCommandRunAsAnotherUserStartsInTheirHome(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	if !s.sim {
		t.Skip("users need the simulator's machines")
	}
	if out, _ := s.sh("web", "root", "id -un; pwd"); out != "root\n/root" {
		t.Fatalf("as root: %q", out)
	}
	if out, _ := s.sh("web", "", "id -un"); out == "root" || out == "" {
		t.Fatalf("default user: %q", out)
	}
}

func TestCommandRunRejectsABadEnvName(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	e := s.call(MethodCommandRun, map[string]any{"machine": "web", "command": "true", "env": map[string]string{"A B": "x"}}, nil)
	wantError(t, e, jsonrpc2.CodeInvalidParams, "invalid_params")
}

func TestCommandRunOnAMissingMachine(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	// orbctl's run exits 1 in silence for a missing machine; that must not
	// look like the command's own exit status.
	d := wantError(t, s.call(MethodCommandRun, map[string]any{"machine": "gone", "command": "true"}, nil), CodeMachineNotFound, "machine_not_found")
	if strings.Join(d.Available, ",") != "web" {
		t.Fatalf("available %v", d.Available)
	}
}

func TestCommandRunTimeoutKillsTheCommandInTheMachine(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	dir, _ := s.sh("web", "", "mktemp -d")
	start := time.Now()
	e := s.call(MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 1; touch " + dir + "/survived", "timeout": 0.3}, nil)
	wantError(t, e, CodeTimeout, "timeout")
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("timeout of 0.3s took %s", took)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, code := s.sh("web", "", "test -e "+dir+"/survived"); code == 0 {
		t.Fatal("the command kept running in the machine after its timeout")
	}
}

func TestCancelRequestStopsACommand(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := jsonrpc2.ID{Num: 1000}
	w, err := s.conn.DispatchCall(ctx, MethodCommandRun, map[string]any{"machine": "web", "command": "echo started; sleep 30"}, jsonrpc2.PickID(id))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.lines(1000)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("command never started")
		}
	}
	start := time.Now()
	if err := s.conn.Notify(ctx, NotifyCancelRequest, map[string]any{"id": 1000}); err != nil {
		t.Fatal(err)
	}
	err = w.Wait(ctx, nil)
	var rpcErr *jsonrpc2.Error
	if !errors.As(err, &rpcErr) {
		t.Fatalf("got %v, want a cancelled error", err)
	}
	wantError(t, rpcErr, CodeCancelled, "cancelled")
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("cancel took %s", took)
	}
}

func TestConcurrentCommandsRunInParallel(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running", "db": "running"})
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			machine := []string{"web", "db"}[i%2]
			out, code := s.sh(machine, "", "sleep 0.5; echo "+machine)
			if out != machine || code != 0 {
				t.Errorf("on %s: %q %d", machine, out, code)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("6 concurrent 0.5s commands took %s: requests are serialised", took)
	}
}

func localFile(t *testing.T, content []byte) string {
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFilePutAndGetRoundTrip(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	content := []byte("line one\n\x00binary\xff\nno newline")
	local := localFile(t, content)
	remoteDir, _ := s.sh("web", "", "mktemp -d")
	remote := remoteDir + "/app.conf"
	var res FileResult
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": remote}, &res); e != nil {
		t.Fatal(e)
	}
	if res.Size != int64(len(content)) {
		t.Fatalf("size %d", res.Size)
	}
	s.sh("web", "", "chmod 640 "+remote)
	// Replacing it without a mode keeps the existing mode.
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": remote}, &res); e != nil {
		t.Fatal(e)
	}
	if mode, _ := s.sh("web", "", "stat -c %a "+remote); mode != "640" {
		t.Fatalf("mode %s after replace, want 640 kept", mode)
	}
	if files, _ := s.sh("web", "", "ls -A "+remoteDir); files != "app.conf" {
		t.Fatalf("files next to the destination: %q", files)
	}
	back := filepath.Join(t.TempDir(), "out")
	if e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": remote, "local_path": back}, &res); e != nil {
		t.Fatal(e)
	}
	got, _ := os.ReadFile(back)
	if string(got) != string(content) {
		t.Fatalf("round trip changed the bytes: %q", got)
	}
	if files := dirNames(t, filepath.Dir(back)); strings.Join(files, " ") != "out" {
		t.Fatalf("files next to the local copy: %q, want only out", files)
	}
}

// dirNames lists a local directory, hidden files included.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFileGetLeavesAUsersPartFileAlone(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	dir := t.TempDir()
	local := filepath.Join(dir, "app.conf")
	mine := []byte("the user's own file, not a transfer\n")
	if err := os.WriteFile(local+".part", mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": "/etc/hostname", "local_path": local}, nil); e != nil {
		t.Fatal(e)
	}
	if got, _ := os.ReadFile(local + ".part"); string(got) != string(mine) {
		t.Fatalf("app.conf.part after the get: %q, want it untouched", got)
	}
	if got, _ := os.ReadFile(local); len(got) == 0 {
		t.Fatal("app.conf is empty after the get")
	}
	// A failed get leaves the directory as it was, too.
	e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": "/nonexistent-file", "local_path": filepath.Join(dir, "other")}, nil)
	wantError(t, e, CodeIOError, "io_error")
	if files := dirNames(t, dir); strings.Join(files, " ") != "app.conf app.conf.part" {
		t.Fatalf("files after a good and a failed get: %q, want app.conf app.conf.part", files)
	}
}

func TestFilePutAsRootKeepsTheOwnerOfAnExistingFile(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	if !s.sim {
		t.Skip("users need the simulator's machines")
	}
	remote, _ := s.sh("web", "", "f=$(mktemp); echo old > $f; chmod 604 $f; echo $f")
	owner, _ := s.sh("web", "", "id -un")
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "user": "root", "local_path": localFile(t, []byte("new\n")), "remote_path": remote}, nil); e != nil {
		t.Fatal(e)
	}
	if got, _ := s.sh("web", "", "stat -c '%U %a' "+remote+"; cat "+remote); got != owner+" 604\nnew" {
		t.Fatalf("after put: %q, want owner %s, mode 604, new content", got, owner)
	}
}

func TestFilePutWithoutPermissionSaysSoAndChangesNothing(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	if !s.sim {
		t.Skip("permissions need the simulator's machines")
	}
	before, _ := s.sh("web", "", "md5sum /etc/hostname")
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, []byte("x")), "remote_path": "/etc/hostname"}, nil)
	wantError(t, e, CodeIOError, "io_error")
	if !strings.Contains(e.Message, "Permission denied") {
		t.Fatalf("message lacks the remote error: %q", e.Message)
	}
	if after, _ := s.sh("web", "", "md5sum /etc/hostname; ls -A /etc | grep -c pyinfra-orbstack"); after != before+"\n0" {
		t.Fatalf("destination or temp files changed: %q", after)
	}
}

func TestFilePutIntoAMissingDirectory(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, []byte("x")), "remote_path": "/nonexistent-dir/x"}, nil)
	wantError(t, e, CodeIOError, "io_error")
	if !strings.Contains(e.Message, "No such file or directory") {
		t.Fatalf("message lacks the remote error: %q", e.Message)
	}
}

func TestFileGetOfAMissingFile(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	local := filepath.Join(t.TempDir(), "out")
	e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": "/nonexistent-file", "local_path": local}, nil)
	wantError(t, e, CodeIOError, "io_error")
	if !strings.Contains(e.Message, "No such file or directory") {
		t.Fatalf("message lacks the remote error: %q", e.Message)
	}
	if files := dirNames(t, filepath.Dir(local)); len(files) != 0 {
		t.Fatalf("files left after a failed get: %q", files)
	}
}

func TestFileTransferParamsAreChecked(t *testing.T) {
	s := withFake(t, map[string]string{"web": "running"})
	for _, p := range []map[string]any{
		{"machine": "web", "local_path": "relative", "remote_path": "/x"},
		{"machine": "web", "local_path": "/tmp/x", "remote_path": ""},
		{"machine": "web", "local_path": "/tmp/x", "remote_path": "/x", "escalation": map[string]any{"command": "sudo -n sh -c 'sh /tmp/pyinfra-orbstack-0123456789abcdef/run'", "stage_dir": "/tmp/not-ours"}},
		{"machine": "web", "local_path": "/tmp/x", "remote_path": "/x", "escalation": map[string]any{"command": "", "stage_dir": "/tmp/pyinfra-orbstack-0123456789abcdef"}},
		{"local_path": "/tmp/x", "remote_path": "/x"},
	} {
		wantError(t, s.call(MethodFilePut, p, nil), jsonrpc2.CodeInvalidParams, "invalid_params")
	}
}

func TestUnknownMethod(t *testing.T) {
	s := withFake(t, nil)
	wantError(t, s.call("machine.explode", nil, nil), jsonrpc2.CodeMethodNotFound, "method_not_found")
}

func TestShutdownCancelsInFlightCommandsThenCloses(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := s.conn.DispatchCall(ctx, MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 30"}, jsonrpc2.PickID(jsonrpc2.ID{Num: 500}))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if e := s.call(MethodShutdown, nil, nil); e != nil {
		t.Fatal(e)
	}
	var rpcErr *jsonrpc2.Error
	if err := w.Wait(ctx, nil); !errors.As(err, &rpcErr) || rpcErr.Code != CodeCancelled {
		t.Fatalf("in-flight command got %v, want cancelled", err)
	}
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("server still serving 5s after shutdown")
	}
}

func TestDebugLogTracesOrbctlButNeverCommands(t *testing.T) {
	path, _ := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	var logs syncBuffer
	serverEnd, clientEnd := net.Pipe()
	srv := NewServer(Options{Getenv: envMap{orbctl.EnvOverride: path}.get, Logger: log.New(&logs, "", 0), Debug: true})
	go srv.Serve(context.Background(), serverEnd)
	conn := jsonrpc2.NewConn(context.Background(), jsonrpc2.NewBufferedStream(clientEnd, jsonrpc2.VSCodeObjectCodec{}), nil)
	defer conn.Close()
	var res CommandRunResult
	err := conn.Call(context.Background(), MethodCommandRun, map[string]any{
		"machine": "web", "command": "true", "env": map[string]string{"PYINFRA_SUDO_PASSWORD": "hunter2"},
	}, &res)
	if err != nil {
		t.Fatal(err)
	}
	got := logs.String()
	if !strings.Contains(got, "orbctl run -m web -w  <command>") || !strings.Contains(got, "command.run #0 done in") {
		t.Fatalf("debug log lacks the orbctl call or the request:\n%s", got)
	}
	if strings.Contains(got, "hunter2") {
		t.Fatalf("debug log leaks a secret:\n%s", got)
	}
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestABugInOneRequestDoesNotStopTheServer(t *testing.T) {
	path := orbctltest.Fake(t)
	serverEnd, clientEnd := net.Pipe()
	srv := NewServer(Options{
		Getenv: envMap{orbctl.EnvOverride: path}.get,
		Logger: log.New(io.Discard, "", 0),
		// A Client without NewCmd panics on its first orbctl call.
		Client: func(path string) *orbctl.Client { return &orbctl.Client{Path: path} },
	})
	go srv.Serve(context.Background(), serverEnd)
	conn := jsonrpc2.NewConn(context.Background(), jsonrpc2.NewBufferedStream(clientEnd, jsonrpc2.VSCodeObjectCodec{}), nil)
	defer conn.Close()
	var rpcErr *jsonrpc2.Error
	err := conn.Call(context.Background(), MethodMachinesList, nil, nil)
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc2.CodeInternalError || !strings.Contains(rpcErr.Message, "a bug") {
		t.Fatalf("got %v, want an internal error", err)
	}
	var res InitializeResult
	if err := conn.Call(context.Background(), MethodInitialize, map[string]any{"protocol_version": ProtocolVersion}, &res); err != nil {
		t.Fatalf("server unusable after a handler panic: %v", err)
	}
}

func TestLargeFileRoundTripIsByteExact(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	content := make([]byte, 32<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range content {
		content[i] = byte(rng.Uint32())
	}
	local := localFile(t, content)
	remoteDir, _ := s.sh("web", "", "mktemp -d")
	start := time.Now()
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": remoteDir + "/big"}, nil); e != nil {
		t.Fatal(e)
	}
	put := time.Since(start)
	back := filepath.Join(t.TempDir(), "big")
	start = time.Now()
	if e := s.call(MethodFileGet, map[string]any{"machine": "web", "remote_path": remoteDir + "/big", "local_path": back}, nil); e != nil {
		t.Fatal(e)
	}
	t.Logf("32 MiB: put %s, get %s", put.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	got, err := os.ReadFile(back)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("32 MiB round trip is not byte-exact (%d bytes back, %v)", len(got), err)
	}
}

func TestConcurrentOutputIsRoutedToItsOwnRequest(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running", "db": "running"})
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			machine := []string{"web", "db"}[i%2]
			tag := fmt.Sprintf("req-%d", i)
			var res CommandRunResult
			id, e := s.callID(MethodCommandRun, map[string]any{"machine": machine, "command": "for n in 1 2 3 4 5 6 7 8 9 10; do echo " + tag + "; echo " + tag + " >&2; done"}, &res)
			if e != nil {
				t.Error(e)
				return
			}
			lines := s.lines(id)
			if len(lines) != 20 {
				t.Errorf("%s: %d lines, want 20", tag, len(lines))
			}
			for _, l := range lines {
				if l.Line != tag {
					t.Errorf("%s got a line of another request: %q", tag, l.Line)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// startServerWithLog is startServer with Debug on, its log in logs.
func startServerWithLog(t *testing.T, env map[string]string, logs *syncBuffer) *testConn {
	t.Helper()
	serverEnd, clientEnd := net.Pipe()
	srv := NewServer(Options{Getenv: envMap(env).get, Logger: log.New(logs, "", 0), Debug: true})
	s := &testConn{t: t, done: make(chan struct{}), output: map[string][]CommandOutput{}}
	go func() {
		defer close(s.done)
		srv.Serve(context.Background(), serverEnd)
	}()
	s.conn = jsonrpc2.NewConn(context.Background(), jsonrpc2.NewBufferedStream(clientEnd, jsonrpc2.VSCodeObjectCodec{}), s)
	t.Cleanup(func() {
		s.conn.Close()
		<-s.done
	})
	return s
}

func TestCommandsShareOneOrbctlRunUnlessSessionsAreOff(t *testing.T) {
	path, sim := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	if !sim {
		t.Skip("needs the simulator")
	}
	for _, tc := range []struct {
		sessions string
		want     int
	}{{"", 1}, {"1", 1}, {"0", 5}} {
		var logs syncBuffer
		s := startServerWithLog(t, map[string]string{orbctl.EnvOverride: path, EnvSessions: tc.sessions}, &logs)
		for i := 0; i < 5; i++ {
			if out, code := s.sh("web", "", "echo $((1+"+fmt.Sprint(i)+"))"); out != fmt.Sprint(1+i) || code != 0 {
				t.Fatalf("%s=%q: %q %d", EnvSessions, tc.sessions, out, code)
			}
		}
		if got := strings.Count(logs.String(), "orbctl run -m web"); got != tc.want {
			t.Errorf("%s=%q: 5 commands made %d orbctl runs, want %d:\n%s", EnvSessions, tc.sessions, got, tc.want, logs.String())
		}
	}
}

// notifications runs command through s and returns its output as the client
// sees it, and its exit code.
func (s *testConn) notifications(machine, command string) ([]string, int) {
	s.t.Helper()
	var res CommandRunResult
	id, e := s.callID(MethodCommandRun, map[string]any{"machine": machine, "command": command}, &res)
	if e != nil {
		s.t.Fatalf("%s: %v", command, e)
	}
	var got []string
	for _, o := range s.lines(id) {
		got = append(got, o.Stream+":"+o.Line)
	}
	return got, res.ExitCode
}

func TestSessionsStreamTheSameNotificationsAsPerCallRuns(t *testing.T) {
	path, sim := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	if !sim {
		t.Skip("needs the simulator")
	}
	on := startServer(t, map[string]string{orbctl.EnvOverride: path})
	off := startServer(t, map[string]string{orbctl.EnvOverride: path, EnvSessions: "0"})
	for _, cmd := range []string{
		"true",
		"printf ''; exit 4",
		"printf 'no newline'",
		"printf 'x\\n\\n'",
		"printf '\\n'",
		"echo one; sleep 0.1; echo two >&2; sleep 0.1; printf three; sleep 0.1; printf 'four\\n\\n' >&2",
		"printf '\\377\\001 not utf-8\\n'",
		"echo 'pyinfra-orbstack-0123 out 0'",
		"cd /; pwd; echo \"$HOME\"",
	} {
		got, gotCode := on.notifications("web", cmd)
		want, wantCode := off.notifications("web", cmd)
		if strings.Join(got, "|") != strings.Join(want, "|") || gotCode != wantCode {
			t.Errorf("%s: sessions %q (exit %d), per-call %q (exit %d)", cmd, got, gotCode, want, wantCode)
		}
	}
}

func TestShutdownEndsTheSessions(t *testing.T) {
	path, sim := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	if !sim {
		t.Skip("needs the simulator")
	}
	s := startServer(t, map[string]string{orbctl.EnvOverride: path})
	count := "pgrep -f 'pyinfra-orbstack-[a]gent' | wc -l"
	if out, _ := s.sh("web", "root", count); out != "1" {
		t.Fatalf("%s agents while a command runs, want 1 (its own)", out)
	}
	if e := s.call(MethodShutdown, nil, nil); e != nil {
		t.Fatal(e)
	}
	<-s.done
	out, err := exec.Command(path, "run", "-m", "web", "-u", "root", "sh", "-c", count+"; ls -d /tmp/pyinfra-orbstack.* 2>/dev/null | wc -l").Output()
	if err != nil || strings.Fields(string(out))[0] != "0" || strings.Fields(string(out))[1] != "0" {
		t.Fatalf("after shutdown: %q agents and private directories (%v), want 0 0", out, err)
	}
}

// Heavy output travels in few, bounded notifications, and a line of any
// length (here 2.3 MiB, longer than a batch) arrives whole once joined.
func TestHeavyOutputComesInBoundedBatchesAndLongLinesArriveWhole(t *testing.T) {
	path, sim := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	if !sim {
		t.Skip("needs the simulator")
	}
	const long = 2<<20 + 300000
	command := fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x; echo; seq 100000; head -c %d /dev/zero | tr '\\0' e >&2", long, flushSize+1)
	var seq strings.Builder
	for i := 1; i <= 100000; i++ {
		fmt.Fprintf(&seq, "%d\n", i)
	}
	for _, sessions := range []string{"", "0"} {
		s := startServer(t, map[string]string{orbctl.EnvOverride: path, EnvSessions: sessions})
		var res CommandRunResult
		id, e := s.callID(MethodCommandRun, map[string]any{"machine": "web", "command": command}, &res)
		if e != nil {
			t.Fatalf("%s=%q: %v", EnvSessions, sessions, e)
		}
		text := map[string]*strings.Builder{"stdout": {}, "stderr": {}}
		notes := s.notificationsOf(id)
		for _, n := range notes {
			size := 0
			for _, run := range n.Output {
				text[run.Stream].WriteString(run.Text)
				size += len(run.Text)
			}
			// A batch closes at flushSize; one write of the session reader
			// (at most 64 KiB) may take it past.
			if size > flushSize+64<<10 {
				t.Errorf("%s=%q: a notification of %d bytes of output, want at most about %d", EnvSessions, sessions, size, flushSize)
			}
		}
		total := long + 1 + seq.Len() + flushSize + 1
		if max := total/flushSize + 40; len(notes) > max {
			t.Errorf("%s=%q: %d notifications for %d bytes of output, want at most %d", EnvSessions, sessions, len(notes), total, max)
		}
		if got, want := text["stdout"].String(), strings.Repeat("x", long)+"\n"+seq.String(); got != want {
			t.Errorf("%s=%q: stdout is %d bytes, want %d (the long line, then seq 100000)", EnvSessions, sessions, len(got), len(want))
		}
		if got := text["stderr"].String(); got != strings.Repeat("e", flushSize+1) {
			t.Errorf("%s=%q: stderr is %d bytes, want %d", EnvSessions, sessions, len(got), flushSize+1)
		}
	}
}

// agentsOf counts the session agents of user running in machine, with an
// orbctl call of its own (not through the server).
func agentsOf(t *testing.T, path, machine, user string) int {
	t.Helper()
	out, err := exec.Command(path, "run", "-m", machine, "-u", "root", "sh", "-c",
		"pgrep -u "+user+" -f 'pyinfra-orbstack-[a]gent' | wc -l").Output()
	if err != nil {
		t.Fatalf("counting agents: %v", err)
	}
	return atoiOrFail(t, strings.TrimSpace(string(out)))
}

func atoiOrFail(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}

// Connecting starts the session of the host's user, so that its first command
// does not wait for one: for a running machine before the reply, for one it
// had to start right after. The first command runs in that session.
func TestConnectStartsTheUsersSessionForTheFirstCommand(t *testing.T) {
	path, sim := orbctltest.WithMachines(t, map[string]string{"web": "running", "db": "stopped"})
	if !sim {
		t.Skip("needs the simulator")
	}
	s := startServer(t, map[string]string{orbctl.EnvOverride: path})
	var res MachineConnectResult
	if e := s.call(MethodMachineConnect, map[string]any{"machine": "web", "user": "root"}, &res); e != nil {
		t.Fatal(e)
	}
	if n := agentsOf(t, path, "web", "root"); n != 1 {
		t.Fatalf("%d agents of root after connect, want 1 (warmed for the first command)", n)
	}
	if out, _ := s.sh("web", "root", "echo hi"); out != "hi" {
		t.Fatalf("first command printed %q", out)
	}
	if n := agentsOf(t, path, "web", "root"); n != 1 {
		t.Fatalf("%d agents of root after the first command, want 1 (it used the warmed one)", n)
	}

	if e := s.call(MethodMachineConnect, map[string]any{"machine": "db", "user": "root"}, &res); e != nil || !res.Started {
		t.Fatalf("connect to a stopped machine: %v %+v", e, res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for agentsOf(t, path, "db", "root") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no session warmed after connect started the machine")
		}
		time.Sleep(100 * time.Millisecond)
	}

	off := startServer(t, map[string]string{orbctl.EnvOverride: path, EnvSessions: "0"})
	if e := off.call(MethodMachineConnect, map[string]any{"machine": "web", "user": "nobody"}, &res); e != nil {
		t.Fatal(e)
	}
	time.Sleep(300 * time.Millisecond)
	if n := agentsOf(t, path, "web", "nobody"); n != 0 {
		t.Fatalf("%d agents of nobody with sessions off, want 0", n)
	}
}
