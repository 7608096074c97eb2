package remote_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/command"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/remote"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// The tests run the real relay and the real remote serve as this test
// binary (TestMain runs the CLI when envMain is set), with a fake ssh that
// runs the remote command locally, and the simulator (or the fake orbctl) as
// the remote Mac's orbctl.
const envMain = "PYINFRA_ORBSTACK_TEST_MAIN"

// envMark is set in every process a test starts, so that it can find what
// is left running.
const envMark = "PYINFRA_ORBSTACK_TEST_MARK"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := command.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func self(t *testing.T) string {
	exe, err := os.Executable()
	require.NoError(t, err)
	return exe
}

// fakeSSH is an ssh that runs its last argument with sh (not exec: as a
// real ssh, it stays the parent of the remote command), answers -G with
// nothing (no ControlPath of the user's), and logs its arguments to
// $FAKE_SSH_LOG. before runs first (a fault, a throttle).
func fakeSSH(t *testing.T, before string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ssh")
	script := `#!/bin/sh
for a; do last=$a; done
case " $* " in *" -G "*) exit 0 ;; esac
[ -z "$FAKE_SSH_LOG" ] || printf '%s %s\n' "$$" "$*" >>"$FAKE_SSH_LOG"
` + before + `
sh -c "$last"
`
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path
}

type reply struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  *jsonrpc2.Error `json:"error"`
	Params json.RawMessage `json:"params"`
}

// relayProc is `serve --mac mac-a` running as a child process.
type relayProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
	log    string // the fake ssh's log
	mark   string

	mu      sync.Mutex
	waiting map[string]chan reply
	notes   []reply
	eof     chan struct{}
	exited  chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// world is the remote Mac's orbctl with these machines.
func world(t *testing.T, machines map[string]string) string {
	path, _ := orbctltest.WithMachines(t, machines)
	return path
}

func startRelay(t *testing.T, ssh, orbctlPath string, extraEnv []string, flags ...string) *relayProc {
	t.Helper()
	mark := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	log := filepath.Join(t.TempDir(), "ssh.log")
	args := append([]string{"serve", "--mac", "mac-a", "--remote-binary", self(t)}, flags...)
	cmd := exec.Command(self(t), args...)
	cmd.Env = append(os.Environ(), envMain+"=1", remote.EnvSSH+"="+ssh, orbctl.EnvOverride+"="+orbctlPath,
		envMark+"="+mark, "FAKE_SSH_LOG="+log)
	cmd.Env = append(cmd.Env, extraEnv...)
	p := &relayProc{t: t, cmd: cmd, stderr: &lockedBuffer{}, log: log, mark: mark,
		waiting: map[string]chan reply{}, eof: make(chan struct{}), exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	p.stdin, _ = cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	require.NoError(t, cmd.Start())
	go p.read(bufio.NewReader(stdout))
	go func() { <-p.eof; p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.eof:
		case <-time.After(20 * time.Second):
			t.Error("the relay did not end within 20 s of its stdin closing")
			cmd.Process.Kill()
		}
		if strings.Contains(p.stderr.String(), "DATA RACE") {
			t.Error("the race detector found a race in the relay or the remote serve")
		}
		if t.Failed() {
			t.Logf("relay stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

func (p *relayProc) read(r *bufio.Reader) {
	defer close(p.eof)
	for {
		body, err := rpc.ReadFrame(r)
		if err != nil {
			return
		}
		var m reply
		if err := json.Unmarshal(body, &m); err != nil {
			p.t.Errorf("the relay sent %q: %v", body, err)
			return
		}
		p.mu.Lock()
		if m.Method != "" {
			p.notes = append(p.notes, m)
		} else if ch := p.waiting[string(m.ID)]; ch != nil {
			delete(p.waiting, string(m.ID))
			ch <- m
		} else {
			p.t.Errorf("a reply nobody waits for: %s", body)
		}
		p.mu.Unlock()
	}
}

func (p *relayProc) send(msg any) {
	body, err := json.Marshal(msg)
	require.NoError(p.t, err)
	_, err = fmt.Fprintf(p.stdin, "Content-Length: %d\r\n\r\n%s", len(body), body)
	require.NoError(p.t, err)
}

// start sends a request and returns where its reply will arrive.
func (p *relayProc) start(id int, method string, params any) chan reply {
	ch := make(chan reply, 1)
	p.mu.Lock()
	p.waiting[fmt.Sprint(id)] = ch
	p.mu.Unlock()
	p.send(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	return ch
}

func (p *relayProc) wait(ch chan reply, within time.Duration) reply {
	p.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		p.t.Fatalf("no reply within %s; relay stderr:\n%s", within, p.stderr.String())
	}
	return reply{}
}

func (p *relayProc) call(id int, method string, params any) reply {
	p.t.Helper()
	return p.wait(p.start(id, method, params), 60*time.Second)
}

func (p *relayProc) ok(id int, method string, params any, result any) {
	p.t.Helper()
	r := p.call(id, method, params)
	if r.Error != nil {
		p.t.Fatalf("%s: %d %s %s", method, r.Error.Code, r.Error.Message, data(r.Error))
	}
	if result != nil {
		require.NoError(p.t, json.Unmarshal(r.Result, result))
	}
}

func data(e *jsonrpc2.Error) map[string]any {
	var d map[string]any
	if e != nil && e.Data != nil {
		json.Unmarshal(*e.Data, &d)
	}
	return d
}

func initParams() map[string]any { return map[string]any{"protocol_version": rpc.ProtocolVersion} }

// sh runs a command in the machine through the relay.
func (p *relayProc) sh(id int, command string) {
	p.t.Helper()
	var res rpc.CommandRunResult
	p.ok(id, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": command}, &res)
	require.Equal(p.t, 0, res.ExitCode, command)
}

// leftovers lists the processes still running with this relay's mark.
func (p *relayProc) leftovers() []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var left []string
	for _, e := range entries {
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(envMark+"="+p.mark+"\x00")) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); bytes.Contains(stat, []byte(") Z ")) {
			continue // a zombie waiting for a parent that is not ours
		}
		left = append(left, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return left
}

// controlDirs are the control directories the relay named to ssh.
func (p *relayProc) controlDirs() []string {
	log, _ := os.ReadFile(p.log)
	var dirs []string
	for _, m := range regexp.MustCompile(`ControlPath=(\S+)/c `).FindAllStringSubmatch(string(log), -1) {
		dirs = append(dirs, m[1])
	}
	return dirs
}

func randomFile(t *testing.T, size int) (string, []byte) {
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), fmt.Sprintf("f%d", size))
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path, data
}

func TestRelayRunsCommandsAndTransfersFilesByteExact(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	p := startRelay(t, fakeSSH(t, ""), orb, nil)
	var init rpc.InitializeResult
	p.ok(1, rpc.MethodInitialize, initParams(), &init)
	assert.Contains(t, init.Capabilities, rpc.CapTransferStream)
	assert.Equal(t, rpc.ProtocolVersion, init.ProtocolVersion)

	var run rpc.CommandRunResult
	p.ok(2, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": "echo hi; echo oops >&2; exit 3"}, &run)
	assert.Equal(t, 3, run.ExitCode)
	p.mu.Lock()
	var out string
	for _, n := range p.notes {
		out += string(n.Params)
	}
	p.mu.Unlock()
	assert.Contains(t, out, `"text":"hi\n"`)
	assert.Contains(t, out, `"text":"oops\n"`)

	p.sh(3, "mkdir -p /tmp/relay")
	id := 10
	for _, size := range []int{0, 1, 100 << 10, 20 << 20} {
		local, want := randomFile(t, size)
		remotePath := fmt.Sprintf("/tmp/relay/f%d", size)
		var put rpc.FileResult
		p.ok(id, rpc.MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": remotePath}, &put)
		assert.Equal(t, int64(size), put.Size)
		back := filepath.Join(t.TempDir(), "back")
		var get rpc.FileResult
		p.ok(id+1, rpc.MethodFileGet, map[string]any{"machine": "web", "remote_path": remotePath, "local_path": back}, &get)
		assert.Equal(t, int64(size), get.Size)
		got, err := os.ReadFile(back)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), "size %d: the file came back different", size)
		entries, _ := os.ReadDir(filepath.Dir(back))
		assert.Len(t, entries, 1, "a part file was left next to %s", back)
		id += 2
	}

	// A transfer's errors come back as a local one's would.
	r := p.call(30, rpc.MethodFileGet, map[string]any{"machine": "web", "remote_path": "/nope", "local_path": filepath.Join(t.TempDir(), "x")})
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(rpc.CodeIOError), r.Error.Code)
	assert.Contains(t, r.Error.Message, "No such file")
	r = p.call(31, rpc.MethodFilePut, map[string]any{"machine": "web", "local_path": "relative", "remote_path": "/tmp/x"})
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(jsonrpc2.CodeInvalidParams), r.Error.Code)
	r = p.call(32, rpc.MethodFilePut, map[string]any{"machine": "web", "local_path": t.TempDir(), "remote_path": "/tmp/x"})
	require.NotNil(t, r.Error)
	assert.Contains(t, r.Error.Message, "not a regular file")

	// The transfers rode the master's socket.
	log, _ := os.ReadFile(p.log)
	assert.Contains(t, string(log), "ControlMaster=yes")
	assert.Regexp(t, `ControlPath=\S+ -o ControlMaster=no .*'transfer'`, string(log))
	assert.NotContains(t, string(log), "echo hi", "a command text reached ssh's argv")

	// The transfers ran in processes of their own on the Mac: the relay
	// counts them into the remote serve's stats.
	var stats rpc.StatsResult
	p.ok(40, rpc.MethodStats, nil, &stats)
	require.NotNil(t, stats.Machines["web"])
	assert.Equal(t, 9, stats.Machines["web"].Transfers) // 4 puts, 5 gets (one of a missing file)
	p.ok(41, rpc.MethodShutdown, nil, nil)
	select {
	case <-p.eof:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end after shutdown")
	}
	assert.NoError(t, <-p.exited)
}

func TestRelayNamesTheMacWhenItsBinaryIsMissing(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	ssh := fakeSSH(t, `echo "zsh:1: command not found: pyinfra-orbstack" >&2; exit 127`)
	p := startRelay(t, ssh, orb, nil)
	params := map[string]any{"protocol_version": rpc.ProtocolVersion, "machine": "web", "remote_path": "/etc/hostname",
		"local_path": filepath.Join(t.TempDir(), "x")}
	for id, method := range map[int]string{1: rpc.MethodInitialize, 2: rpc.MethodMachinesList, 3: rpc.MethodFileGet} {
		r := p.call(id, method, params)
		require.NotNil(t, r.Error, method)
		assert.Equal(t, int64(rpc.CodeMacUnreachable), r.Error.Code)
		assert.Contains(t, r.Error.Message, "mac-a")
		assert.Contains(t, r.Error.Message, "orbstack_remote_binary")
		assert.Equal(t, map[string]any{"kind": "mac_unreachable", "mac": "mac-a", "reason": "binary_missing"}, data(r.Error))
	}
}

func TestRelayNamesTheMacWhenSSHCannotConnect(t *testing.T) {
	ssh := fakeSSH(t, `echo "ssh: connect to host mac-a port 22: Connection refused" >&2; exit 255`)
	p := startRelay(t, ssh, "/nonexistent", nil)
	r := p.call(1, rpc.MethodInitialize, initParams())
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(rpc.CodeMacUnreachable), r.Error.Code)
	assert.Equal(t, "unreachable", data(r.Error)["reason"])
	assert.Contains(t, r.Error.Message, "Connection refused")
}

// fakeRemote is a remote binary that answers initialize (id 1) with body.
func fakeRemote(t *testing.T, answer string) string {
	path := filepath.Join(t.TempDir(), "pyinfra-orbstack")
	script := fmt.Sprintf("#!/bin/sh\nprintf 'Content-Length: %d\\r\\n\\r\\n%%s' '%s'\nexec cat >/dev/null\n", len(answer), answer)
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path
}

func TestRelayPassesARemoteProtocolMismatchOnNamingTheMac(t *testing.T) {
	remoteBin := fakeRemote(t, `{"jsonrpc":"2.0","id":1,"error":{"code":-32009,"message":"protocol mismatch: the pyinfra-orbstack binary speaks protocol 3 but the Python shim speaks 2","data":{"kind":"protocol_mismatch","binary_protocol_version":3,"client_protocol_version":2}}}`)
	p := startRelay(t, fakeSSH(t, ""), "/nonexistent", nil, "--remote-binary", remoteBin)
	r := p.call(1, rpc.MethodInitialize, initParams())
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(rpc.CodeProtocolMismatch), r.Error.Code)
	assert.Contains(t, r.Error.Message, "Mac mac-a speaks protocol 3")
	assert.Contains(t, r.Error.Message, "pip install pyinfra-orbstack==")
	d := data(r.Error)
	assert.Equal(t, "mac-a", d["mac"])
	assert.Equal(t, "protocol_mismatch", d["kind"])
	assert.EqualValues(t, 3, d["binary_protocol_version"])
}

func TestRelayRefusesARemoteThatCannotStreamTransfers(t *testing.T) {
	remoteBin := fakeRemote(t, `{"jsonrpc":"2.0","id":1,"result":{"protocol_version":2,"binary_version":"0.1.0","capabilities":["command.run","file.put","file.get"]}}`)
	p := startRelay(t, fakeSSH(t, ""), "/nonexistent", nil, "--remote-binary", remoteBin)
	r := p.call(1, rpc.MethodInitialize, initParams())
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(rpc.CodeProtocolMismatch), r.Error.Code)
	assert.Contains(t, r.Error.Message, "Mac mac-a (version 0.1.0)")
	assert.Contains(t, r.Error.Message, rpc.CapTransferStream)
	assert.Equal(t, "mac-a", data(r.Error)["mac"])
}

// sshPID is the fake ssh's pid from its log (the first line: the master).
func (p *relayProc) sshPID() int {
	log, _ := os.ReadFile(p.log)
	var pid int
	fmt.Sscan(string(log), &pid)
	return pid
}

func TestADroppedConnectionFailsPendingAndLaterCalls(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	p := startRelay(t, fakeSSH(t, ""), orb, nil)
	p.ok(1, rpc.MethodInitialize, initParams(), nil)
	slow := p.start(2, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 60"})
	time.Sleep(500 * time.Millisecond)
	pid := p.sshPID()
	require.NotZero(t, pid)
	// ssh alone dies (its remote command lives on, holding the pipes).
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	start := time.Now()
	r := p.wait(slow, 10*time.Second)
	require.NotNil(t, r.Error)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, int64(rpc.CodeMacUnreachable), r.Error.Code)
	assert.Equal(t, "dropped", data(r.Error)["reason"])
	assert.Contains(t, r.Error.Message, "mac-a")
	for id, method := range map[int]string{3: rpc.MethodCommandRun, 4: rpc.MethodFilePut} {
		r = p.call(id, method, map[string]any{"machine": "web", "command": "true", "local_path": "/etc/hostname", "remote_path": "/tmp/x"})
		require.NotNil(t, r.Error, method)
		assert.Equal(t, int64(rpc.CodeMacUnreachable), r.Error.Code)
	}
	p.stdin.Close()
	<-p.eof
	require.NoError(t, <-p.exited)
	waitGone(t, p)
}

func waitGone(t *testing.T, p *relayProc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.leftovers()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	assert.Empty(t, p.leftovers(), "processes left running")
}

func TestClosingTheRelaysStdinLeavesNothingRunning(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	p := startRelay(t, fakeSSH(t, ""), orb, nil)
	p.ok(1, rpc.MethodInitialize, initParams(), nil)
	p.start(2, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 60"})
	time.Sleep(500 * time.Millisecond)
	require.NotEmpty(t, p.leftovers())
	dirs := p.controlDirs()
	require.NotEmpty(t, dirs)
	start := time.Now()
	p.stdin.Close()
	select {
	case <-p.eof:
	case <-time.After(15 * time.Second):
		t.Fatal("the relay did not end within 15 s of its stdin closing")
	}
	require.NoError(t, <-p.exited)
	assert.Less(t, time.Since(start), 8*time.Second)
	waitGone(t, p)
	for _, d := range dirs {
		assert.NoDirExists(t, d)
	}
}

func TestSIGINTStopsTheRelayInOrderAndExits130(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	p := startRelay(t, fakeSSH(t, ""), orb, nil)
	p.ok(1, rpc.MethodInitialize, initParams(), nil)
	p.start(2, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 60"})
	time.Sleep(500 * time.Millisecond)
	dirs := p.controlDirs()
	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
	select {
	case <-p.eof:
	case <-time.After(15 * time.Second):
		t.Fatal("the relay did not end within 15 s of SIGINT")
	}
	err := <-p.exited
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, command.ExitInterrupted, exit.ExitCode())
	waitGone(t, p)
	for _, d := range dirs {
		assert.NoDirExists(t, d)
	}
}

// slowTransfers makes the fake ssh's transfer sessions pass their first
// 64 KiB (put: in; get: out), then stall.
const slowTransfers = `case "$last" in *transfer*)
  if [ -n "$FAKE_SSH_SLOW_PUT" ]; then { head -c 65536; sleep 60; cat; } | sh -c "$last"; exit; fi
  if [ -n "$FAKE_SSH_SLOW_GET" ]; then sh -c "$last" | { head -c 65536; sleep 60; cat; }; exit; fi
esac`

func TestACancelledTransferChangesNothing(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	for _, method := range []string{rpc.MethodFilePut, rpc.MethodFileGet} {
		t.Run(method, func(t *testing.T) {
			env := "FAKE_SSH_SLOW_PUT=1"
			if method == rpc.MethodFileGet {
				env = "FAKE_SSH_SLOW_GET=1"
			}
			p := startRelay(t, fakeSSH(t, slowTransfers), orb, []string{env})
			p.ok(1, rpc.MethodInitialize, initParams(), nil)
			p.sh(2, "mkdir -p /tmp/cancel && echo old > /tmp/cancel/dest && head -c 1048576 /dev/zero > /tmp/cancel/big")
			local := filepath.Join(t.TempDir(), "dest")
			require.NoError(t, os.WriteFile(local, []byte("old local\n"), 0o644))
			params := map[string]any{"machine": "web", "local_path": local, "remote_path": "/tmp/cancel/big"}
			if method == rpc.MethodFilePut {
				big, _ := randomFile(t, 1<<20)
				params = map[string]any{"machine": "web", "local_path": big, "remote_path": "/tmp/cancel/dest"}
			}
			ch := p.start(3, method, params)
			time.Sleep(time.Second)
			p.send(map[string]any{"jsonrpc": "2.0", "method": rpc.NotifyCancelRequest, "params": map[string]any{"id": 3}})
			r := p.wait(ch, 10*time.Second)
			require.NotNil(t, r.Error)
			assert.Equal(t, int64(rpc.CodeCancelled), r.Error.Code)
			got, _ := os.ReadFile(local)
			assert.Equal(t, "old local\n", string(got))
			entries, _ := os.ReadDir(filepath.Dir(local))
			assert.Len(t, entries, 1, "a part file was left")
			// The machine kept the old destination, and nothing beside it
			// once the transfer is gone.
			var res rpc.CommandRunResult
			p.ok(4, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": `test "$(cat /tmp/cancel/dest)" = old`}, &res)
			assert.Equal(t, 0, res.ExitCode, "the destination changed")
			p.ok(5, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": "rm -rf /tmp/cancel"}, nil)
		})
	}
}

func TestListOnAMac(t *testing.T) {
	orb := world(t, map[string]string{"web": "running", "db": "stopped"})
	run := func(ssh string, args ...string) (string, string, int) {
		cmd := exec.Command(self(t), append([]string{"list", "--json", "--mac", "mac-a", "--remote-binary", self(t)}, args...)...)
		cmd.Env = append(os.Environ(), envMain+"=1", remote.EnvSSH+"="+ssh, orbctl.EnvOverride+"="+orb)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if exit, ok := err.(*exec.ExitError); ok {
			code = exit.ExitCode()
		}
		return out.String(), errOut.String(), code
	}
	out, errOut, code := run(fakeSSH(t, ""))
	require.Equal(t, 0, code, errOut)
	var machines []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &machines))
	require.Len(t, machines, 2)
	assert.Equal(t, "db", machines[0]["name"])

	_, errOut, code = run(fakeSSH(t, `echo "zsh:1: command not found: pyinfra-orbstack" >&2; exit 127`))
	assert.Equal(t, command.ExitMacUnreachable, code)
	assert.Contains(t, errOut, "not installed on Mac mac-a")

	_, errOut, code = run(fakeSSH(t, `echo "Host key verification failed." >&2; exit 255`))
	assert.Equal(t, command.ExitMacUnreachable, code)
	assert.Contains(t, errOut, "host key")

	_, errOut, code = run(fakeSSH(t, ""), "--ssh-option", "NoEquals")
	assert.Equal(t, command.ExitUsage, code, errOut)
}

// An escalation rides in the transfer's header (never an argv), and its
// failure comes back with data.escalation as a local one's does.
func TestRelayEscalatedTransfers(t *testing.T) {
	orb, sim := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	if !sim {
		t.Skip("needs the simulator's machines (sudo)")
	}
	p := startRelay(t, fakeSSH(t, ""), orb, nil)
	p.ok(1, rpc.MethodInitialize, initParams(), nil)
	p.sh(2, "sudo -n true")
	stage := func(n int) string { return fmt.Sprintf("/tmp/pyinfra-orbstack-%016x", time.Now().UnixNano()+int64(n)) }
	local, want := randomFile(t, 300<<10)
	s := stage(1)
	p.ok(3, rpc.MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": "/root/relayed",
		"escalation": map[string]any{"command": "sudo -H -n sh -c 'sh " + s + "/run'", "stage_dir": s}}, nil)
	back := filepath.Join(t.TempDir(), "back")
	s = stage(2)
	p.ok(4, rpc.MethodFileGet, map[string]any{"machine": "web", "local_path": back, "remote_path": "/root/relayed",
		"escalation": map[string]any{"command": "sudo -H -n sh -c 'sh " + s + "/run'", "stage_dir": s}}, nil)
	got, _ := os.ReadFile(back)
	assert.True(t, bytes.Equal(want, got), "the file came back different")
	s = stage(3)
	r := p.call(5, rpc.MethodFileGet, map[string]any{"machine": "web", "local_path": back, "remote_path": "/root/relayed",
		"escalation": map[string]any{"command": "echo 'sudo: a password is required' >&2; exit 1", "stage_dir": s}})
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(rpc.CodeIOError), r.Error.Code)
	assert.Equal(t, map[string]any{"exit_code": float64(1), "stderr": []any{"sudo: a password is required"}}, data(r.Error)["escalation"])
	log, _ := os.ReadFile(p.log)
	assert.NotContains(t, string(log), "sudo", "an escalation command reached ssh's argv")
}

// A user whose ssh config gives the Mac a ControlPath keeps it: no master
// of ours, no ControlPath of ours on the sessions.
func TestRelayRespectsTheUsersControlPath(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	ssh := fakeSSH(t, "")
	script, _ := os.ReadFile(ssh)
	require.NoError(t, os.WriteFile(ssh, bytes.Replace(script, []byte(`*" -G "*) exit 0`),
		[]byte(`*" -G "*) echo "user root"; echo "controlpath /home/me/.ssh/cm-%C"; exit 0`), 1), 0o755))
	p := startRelay(t, ssh, orb, nil)
	p.ok(1, rpc.MethodInitialize, initParams(), nil)
	local, _ := randomFile(t, 10)
	p.ok(2, rpc.MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": "/tmp/cp"}, nil)
	log, _ := os.ReadFile(p.log)
	assert.NotContains(t, string(log), "ControlPath")
	assert.NotContains(t, string(log), "ControlMaster")
}

// A relay killed with SIGKILL cannot remove its control directory: the
// next relay does, and leaves a live relay's alone.
func TestAKilledRelaysControlDirectoryIsSweptByTheNext(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	first := startRelay(t, fakeSSH(t, ""), orb, nil)
	first.ok(1, rpc.MethodInitialize, initParams(), nil)
	live := startRelay(t, fakeSSH(t, ""), orb, nil)
	live.ok(1, rpc.MethodInitialize, initParams(), nil)
	require.NoError(t, first.cmd.Process.Kill())
	<-first.eof
	<-first.exited
	dead := first.controlDirs()
	require.Len(t, dead, 1)
	assert.DirExists(t, dead[0])
	next := startRelay(t, fakeSSH(t, ""), orb, nil)
	next.ok(1, rpc.MethodInitialize, initParams(), nil)
	assert.NoDirExists(t, dead[0])
	assert.DirExists(t, live.controlDirs()[0])
}

// A shell startup file that prints text on the Mac garbles the protocol:
// the error says so, naming the Mac.
func TestARemoteThatPrintsTextIsNamed(t *testing.T) {
	ssh := fakeSSH(t, `echo "Welcome to mac-a!"`)
	p := startRelay(t, ssh, "/nonexistent", nil)
	r := p.call(1, rpc.MethodInitialize, initParams())
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(rpc.CodeMacUnreachable), r.Error.Code)
	assert.Contains(t, r.Error.Message, "shell startup file")
	assert.Equal(t, "failed", data(r.Error)["reason"])
}

// Many requests in flight at once, commands and transfers, each answered
// under its own id; a large stdin_b64 frame passes whole.
func TestRelayConcurrentRequestsAndLargeFrames(t *testing.T) {
	orb := world(t, map[string]string{"web": "running"})
	p := startRelay(t, fakeSSH(t, ""), orb, nil)
	p.ok(1, rpc.MethodInitialize, initParams(), nil)
	p.sh(2, "mkdir -p /tmp/conc")
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := 100 + i
			if i%3 == 0 {
				local, want := randomFile(t, 50<<10+i)
				var put rpc.FileResult
				p.ok(id, rpc.MethodFilePut, map[string]any{"machine": "web", "local_path": local, "remote_path": fmt.Sprintf("/tmp/conc/%d", i)}, &put)
				assert.Equal(t, int64(len(want)), put.Size)
				return
			}
			var run rpc.CommandRunResult
			p.ok(id, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": fmt.Sprintf("sleep 0.%d; exit %d", i%5, i)}, &run)
			assert.Equal(t, i, run.ExitCode)
		}(i)
	}
	wg.Wait()
	stdin := bytes.Repeat([]byte("x"), 6<<20)
	var run rpc.CommandRunResult
	p.ok(200, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": `test "$(wc -c)" -eq 6291456`, "stdin_b64": stdin}, &run)
	assert.Equal(t, 0, run.ExitCode)
	// An id already in flight is refused, as a local binary does.
	slow := p.start(300, rpc.MethodCommandRun, map[string]any{"machine": "web", "command": "sleep 2"})
	ch := make(chan reply, 1)
	p.mu.Lock()
	p.waiting["300"] = ch
	p.mu.Unlock()
	p.send(map[string]any{"jsonrpc": "2.0", "id": 300, "method": rpc.MethodStats})
	r := p.wait(ch, 10*time.Second)
	require.NotNil(t, r.Error)
	assert.Equal(t, int64(jsonrpc2.CodeInvalidRequest), r.Error.Code)
	p.mu.Lock()
	p.waiting["300"] = slow
	p.mu.Unlock()
	r = p.wait(slow, 10*time.Second)
	assert.Nil(t, r.Error)
}
