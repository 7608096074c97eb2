package rulecheck

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
)

// promOwn are series Prometheus makes itself for every scrape.
var promOwn = map[string]bool{"up": true, "scrape_duration_seconds": true}

func repo(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// world is the simulator (bin/orbctl, its own ORBSIM_HOME) and the built
// pyinfra-orbstack, as `make build` leaves them.
type world struct {
	bin, orbctl string
	env         []string
}

func newWorld(t *testing.T) world {
	root := repo(t)
	w := world{bin: os.Getenv("PYINFRA_ORBSTACK_BINARY"), orbctl: filepath.Join(root, "bin", "orbctl")}
	if w.bin == "" {
		w.bin = filepath.Join(root, "bin", "pyinfra-orbstack")
	}
	for _, p := range []string{w.bin, w.orbctl} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not built (run make build)", p)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the simulator's machines need root")
	}
	home := t.TempDir()
	w.env = append(os.Environ(), "ORBSIM_HOME="+home, "PYINFRA_ORBSTACK_ORBCTL="+w.orbctl)
	t.Cleanup(func() {
		w.run(t, "delete", "-f", "alerted")
		w.run(t, "stop", "-a")
	})
	return w
}

func (w world) run(t *testing.T, args ...string) string {
	cmd := exec.Command(w.orbctl, args...)
	cmd.Env = w.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("orbctl %v: %v: %s", args, err, out)
	}
	return string(out)
}

// monitor starts `pyinfra-orbstack monitor --port 0` and returns its base URL;
// it is stopped with SIGINT (Ctrl-C) at the end, and must exit 0.
func (w world) monitor(t *testing.T) string {
	cmd := exec.Command(w.bin, "monitor", "--port", "0", "--interval", "1s")
	cmd.Env = w.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`serving (http://\S+)/metrics`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Log("monitor: " + sc.Text())
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("monitor after Ctrl-C: %v", err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Error("monitor did not stop on Ctrl-C")
		}
	})
	select {
	case url := <-found:
		return url
	case <-time.After(30 * time.Second):
		t.Fatal("monitor did not say where it listens")
		return ""
	}
}

type families map[string]*dto.MetricFamily

func scrape(t *testing.T, url string) families {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus's text format: %v", err)
	}
	return fams
}

// value is the gauge of family name whose labels include want, or nil.
func (f families) value(name string, want map[string]string) *float64 {
	fam := f[name]
	if fam == nil {
		return nil
	}
next:
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			v := m.Gauge.GetValue()
			return &v
		case m.Counter != nil:
			v := m.Counter.GetValue()
			return &v
		}
	}
	return nil
}

func scrapeUntil(t *testing.T, url, what string, ok func(families) bool) families {
	deadline := time.Now().Add(60 * time.Second)
	for {
		f := scrape(t, url)
		if ok(f) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scrape showed %s within 60s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func is(v *float64, want float64) bool { return v != nil && *v == want }

// metricNames are the metric names an expression selects.
func metricNames(t *testing.T, p parser.Parser, expr string) []string {
	e, err := p.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q does not parse: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

func TestShippedAlertsAndDashboardUseWhatTheExporterServes(t *testing.T) {
	w := newWorld(t)
	w.run(t, "create", "debian", "alerted")
	url := w.monitor(t)
	machine := map[string]string{"machine": "alerted"}
	healthy := scrapeUntil(t, url, "the machine's resources", func(f families) bool {
		return is(f.value("orbstack_machine_probe_success", machine), 1) && f.value("orbstack_machine_filesystem_size_bytes", machine) != nil
	})

	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(filepath.Join(repo(t), "docs", "monitoring", "alerts.yml"), false, model.UTF8Validation, p, nil)
	if len(errs) > 0 {
		t.Fatalf("Prometheus refuses the rules: %v", errs)
	}
	alerts := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("a recording rule in the alert file: %q", r.Record)
				continue
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s needs a severity label and summary and description annotations", r.Alert)
			}
			alerts[r.Alert] = r.Expr
			for _, name := range metricNames(t, p, r.Expr) {
				if healthy[name] == nil && !promOwn[name] {
					t.Errorf("alert %s uses %s, which the exporter does not serve", r.Alert, name)
				}
			}
		}
	}
	for _, want := range []string{"OrbStackNotRunning", "OrbStackMachineDown", "OrbStackMachineNotAnswering",
		"OrbStackMachineProbeSlow", "OrbStackMachineDiskFull", "OrbStackMachineMemoryHigh"} {
		if alerts[want] == "" {
			t.Errorf("no alert %s", want)
		}
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile(filepath.Join(repo(t), "docs", "monitoring", "grafana-dashboard.json"))
	if err != nil || json.Unmarshal(raw, &dash) != nil || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard does not load: %v", err)
	}
	for _, panel := range dash.Panels {
		for _, target := range panel.Targets {
			for _, name := range metricNames(t, p, strings.ReplaceAll(target.Expr, "$machine", ".*")) {
				if healthy[name] == nil {
					t.Errorf("panel %q uses %s, which the exporter does not serve", panel.Title, name)
				}
			}
		}
	}

	// Then the machine stops, then OrbStack does: what Prometheus would have
	// scraped, one phase after the other, and what each alert says about it.
	w.run(t, "stop", "alerted")
	stopped := scrapeUntil(t, url, "the machine stopped", func(f families) bool {
		return is(f.value("orbstack_machine_running", machine), 0)
	})
	w.run(t, "stop") // every machine, and OrbStack itself
	down := scrapeUntil(t, url, "OrbStack stopped", func(f families) bool { return is(f.value("orbstack_up", nil), 0) })
	if down["orbstack_machine_running"] != nil {
		t.Errorf("machines are still served with OrbStack stopped")
	}

	const phase = 20 // one sample a minute, 20 minutes per phase
	storage := promqltest.LoadedStorage(t, "load 1m\n"+series(phase, healthy, stopped, down))
	engine := promqltest.NewTestEngineWithOpts(t, promql.EngineOpts{MaxSamples: 1e6, Timeout: 10 * time.Second})
	firing := func(minute int) []string {
		var got []string
		for name, expr := range alerts {
			q, err := engine.NewInstantQuery(context.Background(), storage, nil, expr, time.Unix(int64(minute*60), 0))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			res := q.Exec(context.Background())
			if res.Err != nil {
				t.Fatalf("%s: %v", name, res.Err)
			}
			if v, _ := res.Vector(); len(v) > 0 {
				got = append(got, name)
			}
			q.Close()
		}
		sort.Strings(got)
		return got
	}
	for _, tc := range []struct {
		minute int
		want   string
	}{
		{phase - 1, ""},                      // all well
		{2*phase - 1, "OrbStackMachineDown"}, // the machine stopped
		{3*phase - 1, "OrbStackNotRunning"},  // OrbStack stopped
	} {
		if got := strings.Join(firing(tc.minute), ","); got != tc.want {
			t.Errorf("at minute %d the alerts firing are %q, want %q", tc.minute, got, tc.want)
		}
	}
}

// series writes promqltest's load lines: every orbstack_* series of the
// phases, plus Prometheus's up, with a value a minute ("_" where a phase
// does not have it).
func series(n int, phases ...families) string {
	type key struct{ name, labels string }
	values := map[key][]string{}
	for i, f := range phases {
		for name, fam := range f {
			if !strings.HasPrefix(name, "orbstack_") {
				continue
			}
			for _, m := range fam.Metric {
				labels := []string{`job="orbstack"`, `instance="127.0.0.1:9787"`}
				for _, l := range m.Label {
					labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				sort.Strings(labels)
				k := key{name, strings.Join(labels, ",")}
				if values[k] == nil {
					values[k] = make([]string, len(phases))
				}
				v := m.GetGauge().GetValue()
				if m.Counter != nil {
					v = m.GetCounter().GetValue()
				}
				values[k][i] = fmt.Sprint(v)
			}
		}
	}
	var b strings.Builder
	b.WriteString(`  up{job="orbstack",instance="127.0.0.1:9787"} ` + strings.TrimSpace(strings.Repeat("1 ", n*len(phases))) + "\n")
	for k, vs := range values {
		fmt.Fprintf(&b, "  %s{%s}", k.name, k.labels)
		for _, v := range vs {
			if v == "" {
				v = "_"
			}
			b.WriteString(strings.Repeat(" "+v, n))
		}
		b.WriteString("\n")
	}
	return b.String()
}
