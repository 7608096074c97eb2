package command

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/monitor"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

func TestMonitorRefusesBadFlagsBeforeDoingAnything(t *testing.T) {
	withoutOrbctl(t)
	for _, tc := range []struct{ args, want string }{
		{"--interval 0s", "--interval must be at least 1s"},
		{"--probe-timeout 0s", "--probe-timeout must be positive"},
		{"--port 70000", "--port must be 0-65535, got 70000"},
		{"--json", "--json goes with --once"},
		{"--interval soon", `invalid argument "soon" for "--interval"`},
	} {
		code, out, errOut := run(t, nil, append([]string{"monitor"}, strings.Fields(tc.args)...)...)
		if code != ExitUsage || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("monitor %s: exit %d, stdout %q, stderr %q", tc.args, code, out, errOut)
		}
	}
}

func TestMonitorOnceJSONIsTheSnapshot(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	orb := func(args ...string) { t.Helper(); mustOrbctl(t, args...) }
	orb("create", "debian", "once")
	code, out, errOut := run(t, nil, "monitor", "--once", "--json")
	var s monitor.Snapshot
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	if !s.OrbStack.Running || len(s.Machines) != 1 || s.Machines[0].Probe == nil || !s.Machines[0].Probe.OK || s.Machines[0].Resources == nil {
		t.Fatalf("%s", out)
	}
	// OrbStack stopped: an answer (exit 1 for scripts), not a crash, and it stays stopped.
	orb("stop")
	code, out, _ = run(t, nil, "monitor", "--once")
	if code != ExitFailure || !strings.HasPrefix(out, "OrbStack: not running") {
		t.Fatalf("exit %d: %q", code, out)
	}
}

func TestMonitorServesOnLoopbackAndStopsWhenCancelled(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"monitor", "--port", "0", "--interval", "1s"}, strings.NewReader(""), io.Discard, &stderr)
	}()
	var addr string
	re := regexp.MustCompile(`serving http://(\S+)/metrics`)
	for deadline := time.Now().Add(20 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("not on loopback: %q (%s)", addr, stderr.String())
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("monitor did not stop")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still listening after it stopped")
	}
}

func TestMonitorOnAPortInUseSaysSo(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Fake(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	code, _, errOut := run(t, nil, "monitor", "--port", port)
	if code != ExitFailure || !strings.Contains(errOut, "cannot listen on 127.0.0.1:"+port) || !strings.Contains(errOut, "--port") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func mustOrbctl(t *testing.T, args ...string) {
	t.Helper()
	c, err := (&Factory{Getenv: os.Getenv}).Orbctl()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.NewCmd(context.Background(), c.Path, args...).CombinedOutput(); err != nil {
		t.Fatalf("orbctl %v: %v: %s", args, err, out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMonitorOnceWithoutOrbctlSaysWhereItLooked(t *testing.T) {
	withoutOrbctl(t)
	code, out, errOut := run(t, nil, "monitor", "--once", "--json")
	if code != ExitOrbctlNotFound || out != "" || !strings.Contains(errOut, "orbctl") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
