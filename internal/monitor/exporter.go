package monitor

import (
	"context"
	"encoding/json"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names, documented in docs/monitoring.md; the shipped alert rules use
// only these (a test checks them against what /metrics serves).
var (
	descUp          = desc("orbstack_up", "1 when OrbStack is running, 0 when it is stopped, starting or orbctl fails.")
	descInfo        = desc("orbstack_info", "OrbStack's version, as a label; always 1.", "version")
	descCPUs        = desc("orbstack_cpus", "OrbStack's CPU limit (config cpu); absent when not set.")
	descMemory      = desc("orbstack_memory_bytes", "OrbStack's memory limit (config memory_mib); absent when not set.")
	descMachines    = desc("orbstack_machines", "How many machines exist.")
	descMInfo       = desc("orbstack_machine_info", "A machine's image, as labels; always 1.", "machine", "distro", "version", "arch")
	descRunning     = desc("orbstack_machine_running", "1 when the machine's state is running, else 0.", "machine")
	descProbeOK     = desc("orbstack_machine_probe_success", "1 when `orbctl run -m MACHINE true` succeeded in the last poll (running machines only).", "machine")
	descProbeTime   = desc("orbstack_machine_probe_duration_seconds", "How long the readiness probe took (running machines only).", "machine")
	descDiskSize    = desc("orbstack_machine_disk_size_bytes", "The machine's disk size as orbctl info reports it.", "machine")
	descLoad1       = desc("orbstack_machine_load1", "1-minute load average inside the machine.", "machine")
	descLoad5       = desc("orbstack_machine_load5", "5-minute load average inside the machine.", "machine")
	descLoad15      = desc("orbstack_machine_load15", "15-minute load average inside the machine.", "machine")
	descMCPUs       = desc("orbstack_machine_cpus", "CPUs the machine sees.", "machine")
	descMemTotal    = desc("orbstack_machine_memory_total_bytes", "Memory the machine sees (MemTotal).", "machine")
	descMemUsed     = desc("orbstack_machine_memory_used_bytes", "Memory in use inside the machine (MemTotal - MemAvailable).", "machine")
	descDiskTotal   = desc("orbstack_machine_filesystem_size_bytes", "Size of the machine's / filesystem.", "machine")
	descDiskUsed    = desc("orbstack_machine_filesystem_used_bytes", "Bytes used on the machine's / filesystem.", "machine")
	descDiskAvail   = desc("orbstack_machine_filesystem_avail_bytes", "Bytes available to non-root users on the machine's / filesystem.", "machine")
	descProcesses   = desc("orbstack_machine_processes", "Processes running in the machine.", "machine")
	descUptime      = desc("orbstack_machine_uptime_seconds", "Seconds since the machine's PID 1 started.", "machine")
	descResourcesOK = desc("orbstack_machine_resources_success", "1 when the resource probe inside the machine succeeded (running machines only).", "machine")
	descPollTime    = desc("orbstack_exporter_poll_duration_seconds", "How long the last poll took.")
	descPollAt      = desc("orbstack_exporter_last_poll_timestamp_seconds", "When the last poll finished (Unix time).")
	descPolls       = desc("orbstack_exporter_polls_total", "Polls finished since the exporter started.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// Collector serves the latest snapshot: every scrape sees one consistent poll,
// and a machine absent from it has no series.
type Collector struct {
	mu    sync.Mutex
	last  *Snapshot
	polls int
}

// Set replaces the snapshot served.
func (c *Collector) Set(s *Snapshot) {
	c.mu.Lock()
	c.last, c.polls = s, c.polls+1
	c.mu.Unlock()
}

// Last is the snapshot served (nil before the first poll).
func (c *Collector) Last() *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descInfo, descCPUs, descMemory, descMachines, descMInfo, descRunning,
		descProbeOK, descProbeTime, descDiskSize, descLoad1, descLoad5, descLoad15, descMCPUs, descMemTotal, descMemUsed,
		descDiskTotal, descDiskUsed, descDiskAvail, descProcesses, descUptime, descResourcesOK, descPollTime, descPollAt, descPolls} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	s, polls := c.last, c.polls
	c.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ch <- prometheus.MustNewConstMetric(descPolls, prometheus.CounterValue, float64(polls))
	if s == nil {
		return
	}
	gauge(descPollTime, s.Seconds)
	gauge(descPollAt, float64(s.Time.Add(time.Duration(s.Seconds*float64(time.Second))).UnixMilli())/1000)
	gauge(descUp, b2f(s.OrbStack.Running))
	if !s.OrbStack.Running {
		return
	}
	if s.OrbStack.Version != "" {
		gauge(descInfo, 1, s.OrbStack.Version)
	}
	if s.OrbStack.CPUs != nil {
		gauge(descCPUs, float64(*s.OrbStack.CPUs))
	}
	if s.OrbStack.MemoryBytes != nil {
		gauge(descMemory, float64(*s.OrbStack.MemoryBytes))
	}
	gauge(descMachines, float64(len(s.Machines)))
	for _, m := range s.Machines {
		gauge(descMInfo, 1, m.Name, m.Distro, m.Version, m.Arch)
		gauge(descRunning, b2f(m.State == "running"), m.Name)
		if m.DiskSize != nil {
			gauge(descDiskSize, float64(*m.DiskSize), m.Name)
		}
		if m.Probe != nil {
			gauge(descProbeOK, b2f(m.Probe.OK), m.Name)
			gauge(descProbeTime, m.Probe.Seconds, m.Name)
		}
		if m.State == "running" {
			gauge(descResourcesOK, b2f(m.Resources != nil), m.Name)
		}
		r := m.Resources
		if r == nil {
			continue
		}
		if r.Load != nil {
			gauge(descLoad1, r.Load[0], m.Name)
			gauge(descLoad5, r.Load[1], m.Name)
			gauge(descLoad15, r.Load[2], m.Name)
		}
		gauge(descMCPUs, float64(r.CPUs), m.Name)
		gauge(descMemTotal, float64(r.Memory.Total), m.Name)
		gauge(descMemUsed, float64(r.Memory.Used), m.Name)
		if d := r.Disk; d.Total != nil {
			gauge(descDiskTotal, float64(*d.Total), m.Name)
			gauge(descDiskUsed, float64(*d.Used), m.Name)
			gauge(descDiskAvail, float64(*d.Available), m.Name)
		}
		gauge(descProcesses, float64(r.Processes), m.Name)
		gauge(descUptime, r.Uptime, m.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Exporter polls every Interval and serves the latest poll over HTTP.
type Exporter struct {
	Poller    *Poller
	Interval  time.Duration
	Logger    *log.Logger
	collector Collector
}

// Handler serves /metrics and /healthz.
func (e *Exporter) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&e.collector, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", e.healthz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<html><body><h1>pyinfra-orbstack monitor</h1><p><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a></p></body></html>`))
	})
	return mux
}

// healthz is the exporter's own health: 200 while polls keep finishing (however
// OrbStack is: that is a metric), 503 before the first poll or when the last
// one is older than three intervals plus a probe timeout.
func (e *Exporter) healthz(w http.ResponseWriter, _ *http.Request) {
	s := e.collector.Last()
	body := map[string]any{"ok": false}
	status := http.StatusServiceUnavailable
	if s != nil {
		age := time.Since(s.Time) - time.Duration(s.Seconds*float64(time.Second))
		body["last_poll"] = s.Time
		body["orbstack_running"] = s.OrbStack.Running
		body["machines"] = len(s.Machines)
		if age <= 3*e.Interval+e.Poller.timeout() {
			body["ok"], status = true, http.StatusOK
		} else {
			body["error"] = "the last poll finished " + age.Round(time.Second).String() + " ago"
		}
	} else {
		body["error"] = "no poll has finished yet"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// Serve polls and serves on ln until ctx ends.
func (e *Exporter) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.pollLoop(ctx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	<-done
	if err == http.ErrServerClosed {
		err = nil
	}
	return err
}

func (e *Exporter) pollLoop(ctx context.Context) {
	t := time.NewTicker(e.Interval)
	defer t.Stop()
	for {
		s, err := e.Poller.Poll(ctx)
		if err != nil { // ctx ended
			return
		}
		e.report(s)
		e.collector.Set(s)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// report logs what changed since the last poll: OrbStack's state, machines
// that stop answering or answer again.
func (e *Exporter) report(s *Snapshot) {
	if e.Logger == nil {
		return
	}
	prev := e.collector.Last()
	if prev == nil || prev.OrbStack.Running != s.OrbStack.Running || prev.OrbStack.Error != s.OrbStack.Error {
		if s.OrbStack.Running {
			e.Logger.Printf("OrbStack is running: %d machines", len(s.Machines))
		} else {
			e.Logger.Printf("OrbStack is not running (%s)", firstNonEmpty(s.OrbStack.Error, s.OrbStack.Status))
		}
	}
	was := map[string]bool{}
	if prev != nil {
		for _, m := range prev.Machines {
			was[m.Name] = m.Probe != nil && m.Probe.OK
		}
	}
	for _, m := range s.Machines {
		ok := m.Probe != nil && m.Probe.OK
		if m.Probe != nil && !ok && (prev == nil || was[m.Name]) {
			e.Logger.Printf("machine %s does not answer: %s", m.Name, m.Probe.Error)
		} else if ok && prev != nil && !was[m.Name] {
			e.Logger.Printf("machine %s answers", m.Name)
		}
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
