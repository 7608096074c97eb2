package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// TestSIGTERMStopsServeAndItsCommands runs the real binary: a SIGTERM (as when
// pyinfra is interrupted) ends serve promptly, and the command it was running
// is stopped inside the machine rather than left behind.
func TestSIGTERMStopsServeAndItsCommands(t *testing.T) {
	orbctlPath, _ := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	bin := buildBinary(t)
	marker := fmt.Sprintf("/tmp/pyinfra-orbstack-sigterm-%d", os.Getpid())
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), orbctl.EnvOverride+"="+orbctlPath)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	send := func(body string) { fmt.Fprintf(stdin, "Content-Length: %d\r\n\r\n%s", len(body), body) }
	send(`{"jsonrpc":"2.0","id":1,"method":"command.run","params":{"machine":"web","command":"echo started; sleep 2; touch ` + marker + `"}}`)
	r := bufio.NewReader(stdout)
	if msg := readMessage(t, r); !strings.Contains(msg, `"text":"started\n"`) {
		t.Fatalf("first message %s", msg)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error)
	go func() { io.Copy(io.Discard, r); done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serve still running 5s after SIGTERM")
	}
	t.Logf("serve exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	time.Sleep(2500 * time.Millisecond)
	check := exec.Command(orbctlPath, "run", "-m", "web", "test", "-e", marker)
	if check.Run() == nil {
		exec.Command(orbctlPath, "run", "-m", "web", "rm", "-f", marker).Run()
		t.Fatal("the command kept running in the machine after serve was terminated")
	}
}

func readMessage(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var n int
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a header: %v", err)
		}
		if line == "\r\n" {
			break
		}
		fmt.Sscanf(line, "Content-Length: %d", &n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAClientThatVanishesStopsServeAndItsCommands: when pyinfra dies, the
// binary's stdout breaks and its stdin closes. It must not die of SIGPIPE on
// the next output line (leaving its orbctl children behind) but stop the
// running command and exit cleanly.
func TestAClientThatVanishesStopsServeAndItsCommands(t *testing.T) {
	orbctlPath, _ := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	bin := buildBinary(t)
	counter := fmt.Sprintf("/tmp/pyinfra-orbstack-vanish-%d", os.Getpid())
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), orbctl.EnvOverride+"="+orbctlPath)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	body := `{"jsonrpc":"2.0","id":1,"method":"command.run","params":{"machine":"web","command":"i=0; while :; do i=$((i+1)); echo $i > ` + counter + `; echo $i; sleep 0.05; done"}}`
	fmt.Fprintf(stdin, "Content-Length: %d\r\n\r\n%s", len(body), body)
	readMessage(t, bufio.NewReader(stdout))
	stdout.Close() // the client is gone: the next output line hits a broken pipe
	time.Sleep(300 * time.Millisecond)
	stdin.Close()
	done := make(chan error)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve ended with %v, want a clean exit", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve still running 5s after its client vanished")
	}
	read := func() string {
		out, _ := exec.Command(orbctlPath, "run", "-m", "web", "cat", counter).Output()
		return strings.TrimSpace(string(out))
	}
	first := read()
	time.Sleep(500 * time.Millisecond)
	if second := read(); first != second {
		t.Fatalf("the command still runs in the machine after serve exited (counter %s → %s)", first, second)
	}
	exec.Command(orbctlPath, "run", "-m", "web", "rm", "-f", counter).Run()
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pyinfra-orbstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
