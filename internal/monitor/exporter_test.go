package monitor

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// These tests run the exporter against the simulator's real machines and
// scrape it over HTTP, as Prometheus does.

func simulator(t *testing.T, machines ...string) string {
	t.Helper()
	path := orbctltest.Simulator(t)
	for _, m := range machines {
		if out, err := exec.Command(path, "create", "debian", m).CombinedOutput(); err != nil {
			t.Fatalf("create %s: %v: %s", m, err, out)
		}
	}
	return path
}

func orb(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("orbctl %v: %v: %s", args, err, out)
	}
	return string(out)
}

type served struct {
	url string
	e   *Exporter
}

func serve(t *testing.T, orbctlPath string, interval time.Duration) served {
	t.Helper()
	c := orbctl.New(orbctlPath)
	c.KillDelay = 200 * time.Millisecond
	e := &Exporter{Poller: &Poller{Client: c, ProbeTimeout: 5 * time.Second}, Interval: interval}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return served{url: "http://" + ln.Addr().String(), e: e}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitPolls waits until n more polls than now have finished, and scrapes.
func (s served) scrapeAfterPoll(t *testing.T) string {
	t.Helper()
	before := s.e.collector.Last()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if last := s.e.collector.Last(); last != nil && last != before {
			_, body := get(t, s.url+"/metrics")
			return body
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no poll finished within 30s")
	return ""
}

func hasLine(body, prefix string) bool {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestExporterServesEveryMachineAndForgetsOneThatVanished(t *testing.T) {
	path := simulator(t, "keep", "gone")
	s := serve(t, path, time.Second)
	body := s.scrapeAfterPoll(t)
	for _, want := range []string{
		"orbstack_up 1", `orbstack_info{version="2.2.3"} 1`, "orbstack_machines 2",
		`orbstack_machine_running{machine="gone"} 1`, `orbstack_machine_probe_success{machine="keep"} 1`,
		`orbstack_machine_memory_total_bytes{machine="keep"}`, `orbstack_machine_filesystem_size_bytes{machine="gone"}`,
		`orbstack_machine_info{arch=`, `orbstack_machine_uptime_seconds{machine="keep"}`,
	} {
		if !hasLine(body, want) {
			t.Errorf("no %q in /metrics:\n%s", want, body)
		}
	}
	orb(t, path, "delete", "-f", "gone")
	body = s.scrapeAfterPoll(t)
	if strings.Contains(body, `machine="gone"`) || !hasLine(body, "orbstack_machines 1") || !hasLine(body, `orbstack_machine_running{machine="keep"} 1`) {
		t.Fatalf("after deleting gone:\n%s", body)
	}
}

func TestStoppedMachineIsNotRunningAndNotProbed(t *testing.T) {
	path := simulator(t, "idle")
	orb(t, path, "stop", "idle")
	s := serve(t, path, time.Second)
	body := s.scrapeAfterPoll(t)
	if !hasLine(body, `orbstack_machine_running{machine="idle"} 0`) || strings.Contains(body, `orbstack_machine_probe_success{machine="idle"}`) {
		t.Fatalf("a stopped machine:\n%s", body)
	}
	if state := orb(t, path, "info", "idle", "-f", "json"); !strings.Contains(state, `"state": "stopped"`) {
		t.Fatalf("the monitor started the machine: %s", state)
	}
}

func TestOrbStackStoppedIsAMetricAndIsNotStarted(t *testing.T) {
	path := simulator(t, "vm1")
	orb(t, path, "stop") // every machine, and OrbStack itself
	s := serve(t, path, time.Second)
	body := s.scrapeAfterPoll(t)
	if !hasLine(body, "orbstack_up 0") || strings.Contains(body, "orbstack_machine") {
		t.Fatalf("OrbStack stopped:\n%s", body)
	}
	if code, health := get(t, s.url+"/healthz"); code != 200 || !strings.Contains(health, `"orbstack_running":false`) {
		t.Fatalf("/healthz with OrbStack stopped: %d %s", code, health)
	}
	// Every orbctl command but status would have started it again.
	if out, _ := exec.Command(path, "status").Output(); strings.TrimSpace(string(out)) != "Stopped" {
		t.Fatalf("the monitor started OrbStack: status %q", out)
	}
}

func TestAHangingMachineDoesNotStallTheOthers(t *testing.T) {
	sim := simulator(t, "hang", "fine")
	// The one stand-in of these tests: an orbctl whose `run` in machine "hang"
	// never returns (a wedged machine), and which is the simulator otherwise.
	wrapper := filepath.Join(t.TempDir(), "orbctl")
	script := "#!/bin/sh\ncase \"$*\" in run\\ -m\\ hang\\ *) exec sleep 600;; esac\nexec " + sim + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := orbctl.New(wrapper)
	c.KillDelay = 200 * time.Millisecond
	p := &Poller{Client: c, ProbeTimeout: 2 * time.Second}
	start := time.Now()
	snap, err := p.Poll(context.Background())
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]MachineStatus{}
	for _, m := range snap.Machines {
		byName[m.Name] = m
	}
	fine, hang := byName["fine"], byName["hang"]
	if fine.Probe == nil || !fine.Probe.OK || fine.Probe.Seconds > 1.5 || fine.Resources == nil {
		t.Errorf("fine was held up by hang: %+v", fine)
	}
	if hang.Probe == nil || hang.Probe.OK || !strings.Contains(hang.Probe.Error, "no answer within 2s") || hang.Resources != nil {
		t.Errorf("hang: %+v", hang)
	}
	// One probe timeout and the kill delay, not one per hanging call.
	if took > 4*time.Second {
		t.Errorf("the poll took %s", took)
	}
}

func TestHealthzBeforeTheFirstPollIsUnavailable(t *testing.T) {
	e := &Exporter{Poller: &Poller{}, Interval: time.Second}
	srv := httptestServer(t, e.Handler())
	code, body := get(t, srv+"/healthz")
	var got map[string]any
	if code != 503 || json.Unmarshal([]byte(body), &got) != nil || got["ok"] != false {
		t.Fatalf("%d %s", code, body)
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
