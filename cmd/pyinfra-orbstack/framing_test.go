package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// serving is the real binary running `serve` with the fake orbctl.
type serving struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr strings.Builder
	peak   chan int64 // VmHWM in KiB, sampled until the process is gone; -1 where /proc has none
}

func serve(t *testing.T, bin string, machines map[string]string) *serving {
	t.Helper()
	path := orbctltest.Fake(t)
	for name, state := range machines {
		orbctltest.AddMachine(t, name, state)
	}
	s := &serving{t: t, cmd: exec.Command(bin, "serve")}
	s.cmd.Env = append(os.Environ(), orbctl.EnvOverride+"="+path)
	s.cmd.Stderr = &s.stderr
	s.stdin, _ = s.cmd.StdinPipe()
	stdout, _ := s.cmd.StdoutPipe()
	s.stdout = bufio.NewReader(stdout)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.peak = make(chan int64, 1)
	go func() { s.peak <- sampleHWM(s.cmd.Process.Pid) }()
	// A binary that waits for input that never comes fails the test (its
	// stdout ends) instead of hanging it.
	watchdog := time.AfterFunc(time.Minute, func() { s.cmd.Process.Kill() })
	t.Cleanup(func() { watchdog.Stop(); s.cmd.Process.Kill(); s.cmd.Wait() })
	return s
}

// sampleHWM reads a process's peak resident memory (Linux's VmHWM, in KiB)
// until it exits, and returns the last value read. Not its rusage: Go starts
// children with vfork, so their ru_maxrss includes the test's own peak.
func sampleHWM(pid int) int64 {
	last := int64(-1)
	for {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return last
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				if kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					last = kib
				}
			}
		}
		if strings.Contains(string(status), "State:\tZ") {
			return last
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (s *serving) send(body string) {
	fmt.Fprintf(s.stdin, "Content-Length: %d\r\n\r\n%s", len(body), body)
}

// exit waits for the binary to exit by itself and returns its status and
// peak resident memory in MiB (-1 where it cannot be measured).
func (s *serving) exit(within time.Duration) (int, int64) {
	s.t.Helper()
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		s.t.Fatalf("serve still running %s later; its log:\n%s", within, s.stderr.String())
	}
	peak := <-s.peak
	if peak > 0 {
		peak /= 1024
	}
	return s.cmd.ProcessState.ExitCode(), peak
}

// TestAnOversizedFrameIsRefusedBeforeItIsRead: a frame over the limit gets an
// error and the connection closes, without the binary reading, let alone
// allocating, the body (a 100 MB parameter used to peak at 691 MB).
func TestAnOversizedFrameIsRefusedBeforeItIsRead(t *testing.T) {
	bin := buildBinary(t)
	huge := `{"jsonrpc":"2.0","id":1,"method":"command.run","params":{"machine":"web","command":"cat","stdin_b64":"` +
		strings.Repeat("QUFB", 25_000_000) + `"}}`
	for name, write := range map[string]func(s *serving){
		"declared 4294967295, no body": func(s *serving) { io.WriteString(s.stdin, "Content-Length: 4294967295\r\n\r\n") },
		"a 100 MB command.run":         func(s *serving) { go s.send(huge) }, // fails when serve closes its stdin
	} {
		t.Run(name, func(t *testing.T) {
			s := serve(t, bin, map[string]string{"web": "running"})
			write(s)
			msg := readMessage(t, s.stdout)
			if !strings.Contains(msg, `"id":null`) || !strings.Contains(msg, `"code":-32600`) || !strings.Contains(msg, fmt.Sprint(rpc.MaxFrame)) {
				t.Fatalf("reply %.300s, want -32600 with id null naming the limit", msg)
			}
			if rest, _ := io.ReadAll(s.stdout); len(rest) != 0 {
				t.Fatalf("after the refusal: %.300q, want the connection closed", rest)
			}
			code, rss := s.exit(5 * time.Second)
			t.Logf("exit status %d, peak RSS %d MiB", code, rss)
			if rss > 48 { // the binary idles at about 10
				t.Fatalf("peak RSS %d MiB: the body was read", rss)
			}
			if !strings.Contains(s.stderr.String(), "refused a frame") {
				t.Fatalf("no reason logged:\n%s", s.stderr.String())
			}
		})
	}
}

// TestAFrameAtTheLimitStaysWithinBoundedMemory measures the worst a client can
// make the binary hold: one frame of MaxFrame bytes.
func TestAFrameAtTheLimitStaysWithinBoundedMemory(t *testing.T) {
	bin := buildBinary(t)
	s := serve(t, bin, map[string]string{"web": "running"})
	head := `{"jsonrpc":"2.0","id":1,"method":"command.run","params":{"machine":"web","command":"wc -c","stdin_b64":"`
	tail := `"}}`
	n := (rpc.MaxFrame - len(head) - len(tail)) / 4 * 3
	stdin := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("<", n)))
	s.send(head + stdin + tail)
	var msg string
	for msg = readMessage(t, s.stdout); strings.Contains(msg, `"method"`); msg = readMessage(t, s.stdout) {
		if !strings.Contains(msg, fmt.Sprintf(`"text":"%d\n"`, n)) {
			t.Fatalf("output %.300s, want %d bytes counted", msg, n)
		}
	}
	if !strings.Contains(msg, `"exit_code":0`) {
		t.Fatalf("reply %s", msg)
	}
	s.stdin.Close()
	_, rss := s.exit(10 * time.Second)
	t.Logf("a %d-byte frame (%d bytes of stdin): peak RSS %d MiB", rpc.MaxFrame, n, rss)
	if rss > 256 {
		t.Fatalf("peak RSS %d MiB for one frame at the limit", rss)
	}
}

// TestEOFOnStdinWhileACommandRuns: EOF means the client is gone. The command
// is stopped, nothing more is written (no reply), and serve exits 0.
func TestEOFOnStdinWhileACommandRuns(t *testing.T) {
	bin := buildBinary(t)
	s := serve(t, bin, map[string]string{"web": "running"})
	marker := t.TempDir() + "/survived"
	s.send(`{"jsonrpc":"2.0","id":1,"method":"command.run","params":{"machine":"web","command":"echo started; sleep 2; touch ` + marker + `"}}`)
	if msg := readMessage(t, s.stdout); !strings.Contains(msg, `"text":"started\n"`) {
		t.Fatalf("first message %s", msg)
	}
	start := time.Now()
	s.stdin.Close()
	if rest, _ := io.ReadAll(s.stdout); len(rest) != 0 {
		t.Fatalf("after EOF the binary wrote %q, want nothing", rest)
	}
	if code, _ := s.exit(5 * time.Second); code != 0 {
		t.Fatalf("exit status %d after EOF, want 0; log:\n%s", code, s.stderr.String())
	}
	t.Logf("exited %s after EOF", time.Since(start).Round(time.Millisecond))
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command kept running after serve exited")
	}
}
