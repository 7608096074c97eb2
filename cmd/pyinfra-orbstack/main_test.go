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
	bin := filepath.Join(t.TempDir(), "pyinfra-orbstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
	if msg := readMessage(t, r); !strings.Contains(msg, `"line":"started"`) {
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
