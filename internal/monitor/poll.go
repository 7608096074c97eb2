// Package monitor watches OrbStack and its machines: a poll reads OrbStack's
// state, every machine's state and disk size, and for each running machine a
// readiness probe's latency and its resource figures (probe.sh, run inside it).
// The exporter (exporter.go) serves the latest poll as Prometheus metrics.
//
// Rules it keeps, and why:
//   - Only `orbctl status` is asked while OrbStack is not running: every other
//     orbctl command starts OrbStack, and a monitor must not.
//   - Each machine is probed in its own goroutine under its own deadline, so a
//     machine that hangs costs its own probe, never the others'; the orbctl of a
//     probe past its deadline is killed (SIGTERM, then SIGKILL).
//   - A poll is a fresh picture: a machine that vanished is simply not in it.
package monitor

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// DefaultProbeTimeout bounds each orbctl call of a poll.
const DefaultProbeTimeout = 10 * time.Second

// Snapshot is one poll's picture; its JSON is what `monitor --once --json` prints.
type Snapshot struct {
	Time     time.Time       `json:"time"`
	Seconds  float64         `json:"poll_seconds"`
	OrbStack OrbStackStatus  `json:"orbstack"`
	Machines []MachineStatus `json:"machines"`
}

// OrbStackStatus is OrbStack itself.
type OrbStackStatus struct {
	Running     bool    `json:"running"`
	Status      string  `json:"status"` // Running, Stopped, Starting; "" when orbctl failed
	Version     string  `json:"version"`
	CPUs        *int    `json:"cpus"`         // the VM's limit
	MemoryBytes *uint64 `json:"memory_bytes"` // the VM's limit
	Error       string  `json:"error,omitempty"`
}

// MachineStatus is one machine.
type MachineStatus struct {
	Name      string     `json:"name"`
	State     string     `json:"state"`
	Distro    string     `json:"distro"`
	Version   string     `json:"version"`
	Arch      string     `json:"arch"`
	DiskSize  *uint64    `json:"disk_size"`
	Probe     *Probe     `json:"probe"`     // nil unless running
	Resources *Resources `json:"resources"` // nil unless running and read
	// ResourcesError says why Resources is nil for a running machine.
	ResourcesError string `json:"resources_error,omitempty"`
}

// Probe is the readiness probe (`orbctl run -m NAME true`).
type Probe struct {
	OK      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// Poller polls one orbctl.
type Poller struct {
	Client       *orbctl.Client
	ProbeTimeout time.Duration // per orbctl call; DefaultProbeTimeout when 0
}

func (p *Poller) timeout() time.Duration {
	if p.ProbeTimeout > 0 {
		return p.ProbeTimeout
	}
	return DefaultProbeTimeout
}

func (p *Poller) call(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	err := fn(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("no answer within " + p.timeout().String())
	}
	return err
}

// Poll takes one snapshot. It fails only when ctx ends: everything else
// (orbctl missing, OrbStack stopped, a machine not answering) is in the snapshot.
func (p *Poller) Poll(ctx context.Context) (*Snapshot, error) {
	start := time.Now()
	s := &Snapshot{Time: start.UTC(), Machines: []MachineStatus{}}
	defer func() { s.Seconds = time.Since(start).Seconds() }()
	c := p.Client
	var status string
	err := p.call(ctx, func(ctx context.Context) (err error) { status, err = c.Status(ctx); return })
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s.OrbStack.Status = status
	s.OrbStack.Running = err == nil && status == "Running"
	if err != nil {
		s.OrbStack.Error = err.Error()
	}
	if !s.OrbStack.Running {
		return s, nil
	}
	var machines []orbctl.Machine
	var settings map[string]string
	var wg sync.WaitGroup
	var listErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		listErr = p.call(ctx, func(ctx context.Context) (err error) { machines, err = c.List(ctx); return })
	}()
	go func() {
		defer wg.Done()
		_ = p.call(ctx, func(ctx context.Context) (err error) { settings, err = c.ConfigShow(ctx); return })
	}()
	go func() {
		defer wg.Done()
		_ = p.call(ctx, func(ctx context.Context) error {
			v, err := c.Version(ctx)
			s.OrbStack.Version = v.Version
			return err
		})
	}()
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s.OrbStack.CPUs, s.OrbStack.MemoryBytes = orbctl.VMLimits(settings)
	if listErr != nil {
		s.OrbStack.Error = "orbctl list: " + listErr.Error()
		return s, nil
	}
	s.Machines = make([]MachineStatus, len(machines))
	for i, m := range machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Machines[i] = p.machine(ctx, m)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	sort.Slice(s.Machines, func(i, j int) bool { return s.Machines[i].Name < s.Machines[j].Name })
	return s, nil
}

func (p *Poller) machine(ctx context.Context, m orbctl.Machine) MachineStatus {
	ms := MachineStatus{Name: m.Name, State: m.State, Distro: m.Distro, Version: m.Version, Arch: m.Arch}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = p.call(ctx, func(ctx context.Context) error {
			info, err := p.Client.Info(ctx, m.Name)
			ms.DiskSize = info.DiskSize
			return err
		})
	}()
	if m.State == "running" {
		wg.Add(2)
		go func() {
			defer wg.Done()
			start := time.Now()
			var code int
			err := p.call(ctx, func(ctx context.Context) (err error) {
				code, err = p.Client.Run(ctx, orbctl.RunSpec{Machine: m.Name, Argv: []string{"true"}})
				return
			})
			ms.Probe = &Probe{OK: err == nil && code == 0, Seconds: time.Since(start).Seconds()}
			switch {
			case err != nil:
				ms.Probe.Error = err.Error()
			case code != 0:
				ms.Probe.Error = "orbctl run -m " + m.Name + " true exited " + strconv.Itoa(code)
			}
		}()
		go func() {
			defer wg.Done()
			err := p.call(ctx, func(ctx context.Context) error {
				r, err := ReadResources(ctx, p.Client, m.Name)
				if err == nil {
					ms.Resources = &r
				}
				return err
			})
			if err != nil {
				ms.ResourcesError = err.Error()
			}
		}()
	}
	wg.Wait()
	return ms
}
