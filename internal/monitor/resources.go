package monitor

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// ProbeScript prints a machine's resource figures as key=value lines. The
// orbstack.Resources fact runs the same script (pyshim's test checks that the
// two copies are identical) and reads the same keys.
//
//go:embed probe.sh
var ProbeScript string

// Resources are a machine's figures as read from inside it, in the shape of the
// orbstack.Resources fact (without its error). Sizes are bytes.
type Resources struct {
	Load         *[3]float64 `json:"load"` // 1, 5 and 15 minute load averages
	CPUs         int         `json:"cpus"`
	Memory       Memory      `json:"memory"`
	Disk         Disk        `json:"disk"` // of /
	Processes    int         `json:"processes"`
	Uptime       float64     `json:"uptime_seconds"`
	UptimeSource string      `json:"uptime_source"` // init (since the machine's PID 1 started) or kernel
	Missing      []string    `json:"missing"`       // tools that could have given a missing figure
}

// Memory is what the machine sees; Used is Total minus Available.
type Memory struct {
	Total     uint64 `json:"total"`
	Used      uint64 `json:"used"`
	Available uint64 `json:"available"`
}

// Disk is the / filesystem; all nil when no tool could read it.
type Disk struct {
	Total     *uint64 `json:"total"`
	Used      *uint64 `json:"used"`
	Available *uint64 `json:"available"`
	Method    *string `json:"method"` // df, stat or python3
}

// ParseResources reads ProbeScript's output.
func ParseResources(out []byte) (Resources, error) {
	kv := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			kv[k] = v
		}
	}
	if _, ok := kv["missing"]; !ok {
		return Resources{}, fmt.Errorf("the resource probe printed no missing= line (cut short?): %q", truncate(out))
	}
	r := Resources{Missing: []string{}}
	if f := strings.Fields(kv["load"]); len(f) == 3 {
		var load [3]float64
		for i, s := range f {
			load[i], _ = strconv.ParseFloat(s, 64)
		}
		r.Load = &load
	}
	r.CPUs, _ = strconv.Atoi(kv["cpus"])
	kib := func(k string) uint64 { n, _ := strconv.ParseUint(kv["mem_"+k], 10, 64); return n * 1024 }
	r.Memory.Total = kib("MemTotal")
	r.Memory.Available = kib("MemAvailable")
	if _, ok := kv["mem_MemAvailable"]; !ok { // kernels before 3.14
		r.Memory.Available = kib("MemFree") + kib("Buffers") + kib("Cached")
	}
	if r.Memory.Available <= r.Memory.Total {
		r.Memory.Used = r.Memory.Total - r.Memory.Available
	}
	if f := strings.Fields(kv["disk"]); len(f) == 4 {
		var n [3]uint64
		for i := range n {
			n[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		r.Disk = Disk{Total: &n[0], Used: &n[1], Available: &n[2], Method: &f[0]}
	}
	r.Processes, _ = strconv.Atoi(kv["processes"])
	kernel, _ := strconv.ParseFloat(kv["kernel_uptime"], 64)
	r.Uptime, r.UptimeSource = kernel, "kernel"
	ticks, terr := strconv.ParseFloat(kv["init_start_ticks"], 64)
	hz, herr := strconv.ParseFloat(kv["clk_tck"], 64)
	if terr == nil && herr == nil && hz > 0 && kernel-ticks/hz >= 0 {
		// A machine is a container: the kernel's uptime is the VM's, PID 1's age is the machine's.
		r.Uptime, r.UptimeSource = kernel-ticks/hz, "init"
	}
	r.Uptime = math.Round(r.Uptime*100) / 100
	if m := strings.TrimSpace(kv["missing"]); m != "" {
		for _, group := range strings.Fields(m) {
			r.Missing = append(r.Missing, strings.Split(group, ",")...)
		}
	}
	return r, nil
}

// ReadResources runs ProbeScript in machine (as its default user).
func ReadResources(ctx context.Context, c *orbctl.Client, machine string) (Resources, error) {
	var stdout, stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{Machine: machine, Argv: []string{"sh", "-c", ProbeScript}, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return Resources{}, err
	}
	if code != 0 {
		return Resources{}, fmt.Errorf("resource probe in %s exited %d: %s", machine, code, truncate(stderr.Bytes()))
	}
	return ParseResources(stdout.Bytes())
}

func truncate(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
