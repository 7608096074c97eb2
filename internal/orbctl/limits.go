package orbctl

import (
	"context"
	"strconv"
	"strings"
)

// ResourceLimits are OrbStack's resource limits: the VM's (global `cpu`, `memory_mib`)
// and each machine's (OrbStack 2.1+ `machine.NAME.cpu`, `memory_mib`,
// `disk_bytes`; 0 or absent means none), with the disk size `info` reports.
type ResourceLimits struct {
	CPUs        *int            `json:"cpus"`         // the VM's CPU limit (config `cpu`)
	MemoryBytes *uint64         `json:"memory_bytes"` // the VM's memory limit (config `memory_mib`)
	Machines    []MachineLimits `json:"machines"`
}

// MachineLimits is one machine's limits and disk size; nil is "none set" (or,
// for DiskSize, "OrbStack does not say": before 1.10, or the machine vanished
// between list and info).
type MachineLimits struct {
	Name        string  `json:"name"`
	State       string  `json:"state"`
	DiskSize    *uint64 `json:"disk_size"`
	CPUs        *int    `json:"cpus"`
	MemoryBytes *uint64 `json:"memory_bytes"`
	DiskBytes   *uint64 `json:"disk_bytes"`
}

// ResourceLimits reads `config show` once, `list` once and `info` per machine.
func (c *Client) ResourceLimits(ctx context.Context) (ResourceLimits, error) {
	settings, err := c.ConfigShow(ctx)
	if err != nil {
		return ResourceLimits{}, err
	}
	machines, err := c.List(ctx)
	if err != nil {
		return ResourceLimits{}, err
	}
	l := ResourceLimits{Machines: []MachineLimits{}}
	l.CPUs, l.MemoryBytes = VMLimits(settings)
	for _, m := range machines {
		ml := MachineLimits{Name: m.Name, State: m.State}
		if info, err := c.Info(ctx, m.Name); err == nil {
			ml.DiskSize = info.DiskSize
		} else if ctx.Err() != nil {
			return ResourceLimits{}, ctx.Err()
		}
		ml.CPUs = positiveInt(settings[MachineKey(m.Name, "cpu")])
		ml.MemoryBytes = mib(settings[MachineKey(m.Name, "memory_mib")])
		if n, err := strconv.ParseUint(strings.TrimSpace(settings[MachineKey(m.Name, "disk_bytes")]), 10, 64); err == nil && n > 0 {
			ml.DiskBytes = &n
		}
		l.Machines = append(l.Machines, ml)
	}
	return l, nil
}

// VMLimits reads the VM's CPU and memory limits from `config show`'s settings
// (nil when not set or not readable).
func VMLimits(settings map[string]string) (cpus *int, memoryBytes *uint64) {
	return positiveInt(settings["cpu"]), mib(settings["memory_mib"])
}

func positiveInt(s string) *int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n <= 0 {
		return nil
	}
	return &n
}

func mib(s string) *uint64 {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || n == 0 {
		return nil
	}
	n *= 1 << 20
	return &n
}
