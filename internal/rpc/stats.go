package rpc

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// MethodStats asks what the binary did with orbctl so far: the shim's deploy
// metrics (PYINFRA_ORBSTACK_METRICS) read it once, at the end of a run.
const MethodStats = "stats"

// StatsResult is the stats method's result.
type StatsResult struct {
	Orbctl   map[string]int           `json:"orbctl"`   // invocations by orbctl command (run, info, list, start, ...)
	Machines map[string]*MachineStats `json:"machines"` // `orbctl run` invocations by machine and purpose
}

// MachineStats counts one machine's `orbctl run` invocations by what they were for.
type MachineStats struct {
	SessionsStarted int `json:"sessions_started"` // command session agents started
	PerCallRuns     int `json:"per_call_runs"`    // commands run the per-call way (sessions off, or none usable)
	Transfers       int `json:"transfers"`        // file.put / file.get
	Probes          int `json:"probes"`           // readiness probes (`true`)
	OtherRuns       int `json:"other_runs"`       // kills of timed-out commands, user checks
}

// invocationCounter counts orbctl invocations through the driver's one seam
// for starting processes (Client.NewCmd). It sees argv only; it keeps no
// command text.
type invocationCounter struct {
	mu       sync.Mutex
	verbs    map[string]int
	machines map[string]*MachineStats
}

type newCmdFunc = func(ctx context.Context, path string, args ...string) *exec.Cmd

func (ic *invocationCounter) wrap(next newCmdFunc) newCmdFunc {
	return func(ctx context.Context, path string, args ...string) *exec.Cmd {
		ic.count(args)
		return next(ctx, path, args...)
	}
}

func (ic *invocationCounter) count(args []string) {
	if len(args) == 0 {
		return
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.verbs == nil {
		ic.verbs, ic.machines = map[string]int{}, map[string]*MachineStats{}
	}
	ic.verbs[args[0]]++
	if args[0] != "run" {
		return
	}
	i := slices.Index(args, "-m")
	if i < 0 || i+1 >= len(args) {
		return
	}
	ms := ic.machines[args[i+1]]
	if ms == nil {
		ms = &MachineStats{}
		ic.machines[args[i+1]] = ms
	}
	// The fixed scripts name themselves in $0 (the argument after sh -c SCRIPT).
	switch name := runName(args); {
	case name == "pyinfra-orbstack-agent":
		ms.SessionsStarted++
	case name == "pyinfra-orbstack-run":
		ms.PerCallRuns++
	case strings.HasPrefix(name, "pyinfra-orbstack-put"), strings.HasPrefix(name, "pyinfra-orbstack-get"):
		ms.Transfers++
	case args[len(args)-1] == "true":
		ms.Probes++
	default:
		ms.OtherRuns++
	}
}

func runName(args []string) string {
	for i := 0; i+3 < len(args); i++ {
		if args[i] == "sh" && args[i+1] == "-c" {
			return args[i+3]
		}
	}
	return ""
}

func (ic *invocationCounter) result() StatsResult {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	r := StatsResult{Orbctl: map[string]int{}, Machines: map[string]*MachineStats{}}
	for k, v := range ic.verbs {
		r.Orbctl[k] = v
	}
	for k, v := range ic.machines {
		c := *v
		r.Machines[k] = &c
	}
	return r
}
