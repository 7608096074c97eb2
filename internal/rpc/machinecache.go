package rpc

import (
	"context"
	"sync"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// machineCacheTTL bounds how long one `orbctl list` answers connects: long
// enough for every host of an inventory connecting at once, short enough that
// a machine stopped by hand later in the run is seen.
const machineCacheTTL = 10 * time.Second

// machineCache is what one `orbctl list` (with `orbctl list`'s table for the
// addresses) said about every machine, shared by the connects of a run, so N
// hosts cost one list instead of N `info` calls. Concurrent connects wait for
// the one list in flight. A lifecycle change made by this run (create, start)
// drops it.
type machineCache struct {
	mu      sync.Mutex
	current *machineListing
}

type machineListing struct {
	done     chan struct{}
	at       time.Time
	machines map[string]orbctl.Machine
	err      error
}

// lookup returns the machine as listed, and whether the listing knew it (with
// its address when running); false means: ask `info`.
func (mc *machineCache) lookup(ctx context.Context, c *orbctl.Client, name string) (orbctl.Machine, bool) {
	mc.mu.Lock()
	l := mc.current
	if l == nil || l.expired() {
		l = &machineListing{done: make(chan struct{})}
		mc.current = l
		go l.fill(c)
	}
	mc.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		return orbctl.Machine{}, false
	}
	m, ok := l.machines[name]
	if l.err != nil || !ok || (m.State == "running" && m.IP4 == "") {
		return orbctl.Machine{}, false
	}
	return m, true
}

// expired is whether a finished listing is too old to answer.
func (l *machineListing) expired() bool {
	select {
	case <-l.done:
		return time.Since(l.at) > machineCacheTTL
	default:
		return false // still listing: wait for it
	}
}

// fill lists the machines; it is not tied to the first caller's context, whose
// end must not fail the others waiting.
func (l *machineListing) fill(c *orbctl.Client) {
	defer close(l.done)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ips map[string]string
	var ipErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ips, ipErr = c.ListAddresses(ctx)
	}()
	machines, err := c.List(ctx)
	wg.Wait()
	l.at = time.Now()
	if err != nil {
		l.err = err
		return
	}
	l.machines = make(map[string]orbctl.Machine, len(machines))
	for _, m := range machines {
		if ipErr == nil && m.State == "running" {
			m.IP4 = ips[m.Name]
		}
		l.machines[m.Name] = m
	}
}

// drop forgets the listing: this run changed a machine.
func (mc *machineCache) drop() {
	mc.mu.Lock()
	mc.current = nil
	mc.mu.Unlock()
}
