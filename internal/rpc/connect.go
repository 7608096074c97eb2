package rpc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/session"
)

// lockMachine serialises connects to one machine; waiting for the lock ends
// with ctx (a cancelled or shut-down request does not wait its turn).
func (s *Server) lockMachine(ctx context.Context, name string) (unlock func(), err error) {
	l, _ := s.machineLocks.LoadOrStore(name, make(chan struct{}, 1))
	slot := l.(chan struct{})
	select {
	case slot <- struct{}{}:
		return func() { <-slot }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Server) machineConnect(ctx context.Context, p MachineConnectParams) (any, error) {
	if p.Machine == "" {
		return nil, invalidParams("machine", "machine.connect needs a machine name")
	}
	if p.Timeout < 0 {
		return nil, invalidParams("timeout", "timeout must not be negative, got %v", p.Timeout)
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	if !orbctl.ValidName(p.Machine) {
		msg := fmt.Sprintf("`%s` is not even a valid machine name (%s)", p.Machine, orbctl.NameRule)
		if names := c.Names(ctx); len(names) > 0 {
			msg += "; existing machines: " + strings.Join(names, ", ")
		}
		return nil, &orbctl.Error{Kind: orbctl.ErrBadArgument, Machine: p.Machine, Message: msg}
	}
	// Hosts connecting to the same machine at once would otherwise race to
	// create or start it; the second one waits and finds it running.
	unlock, err := s.lockMachine(ctx, p.Machine)
	if err != nil {
		return nil, err
	}
	defer unlock()

	var res MachineConnectResult
	// One listing answers every host of the run (machinecache.go); what it
	// cannot answer (a missing machine, a failed list) is asked of info, whose
	// errors say what to do.
	m, listed := s.machines.lookup(ctx, c, p.Machine)
	if !listed {
		m, err = c.Info(ctx, p.Machine)
	}
	if errors.Is(err, orbctl.ErrMachineNotFound) && p.Create != nil {
		opts, optsErr := createOptions(p.Machine, *p.Create)
		if optsErr != nil {
			return nil, optsErr
		}
		err = c.Create(ctx, opts)
		s.machines.drop() // this run changed the machines
		if err != nil {
			return nil, err
		}
		res.Created, listed = true, false
		m, err = c.Info(ctx, p.Machine)
	}
	if err != nil {
		return nil, err
	}
	start := p.Start == nil || *p.Start
	if m.State != "running" && !start {
		res.Machine = m
		return res, nil
	}
	// The timeout covers starting and becoming ready, not creating (which
	// may download an image).
	timeout := seconds(p.Timeout)
	if timeout == 0 {
		timeout = orbctl.DefaultReadyTimeout
	}
	deadline := time.Now().Add(timeout)
	key := session.Key{Machine: m.Name, User: p.User}
	wait := timeout
	if m.State == "running" && s.sessions.Pooled {
		// The host's first command will need a session: starting it now is
		// the readiness check (the machine ran the agent), one orbctl call
		// instead of a probe now and a session start later.
		warmCtx, cancel := context.WithDeadline(ctx, deadline)
		err := s.sessions.Warm(warmCtx, c, key)
		cancel()
		if err == nil {
			res.Machine = m
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Until(deadline) <= 0 {
			return nil, &orbctl.Error{Kind: orbctl.ErrNotReady, Machine: m.Name,
				Message: fmt.Sprintf("machine %s did not answer a command within %s: %v", m.Name, timeout, err)}
		}
		// Not ready yet (just created, or started by someone else), or no
		// session can run there: the probe waits, and says why if it must.
		wait = max(time.Until(deadline).Round(time.Millisecond), time.Millisecond) // 0 would mean the default
	}
	var startStep func(context.Context, string) error
	if m.State != "running" {
		startStep = func(ctx context.Context, name string) error {
			defer s.machines.drop() // this run changed the machines
			return c.Start(ctx, name)
		}
		res.Started, listed = true, false
	}
	if err := c.StartAndWait(ctx, m.Name, wait, startStep); err != nil {
		return nil, err
	}
	if !listed { // created or started here: its address is new
		if m, err = c.Info(ctx, m.Name); err != nil {
			return nil, err
		}
	}
	if s.sessions.Pooled {
		// Warmed while the reply travels and the host's work is prepared;
		// the pool stops it if the server shuts down first.
		go s.sessions.Warm(context.WithoutCancel(ctx), c, key) // a failure: Run meets it again and says so
	}
	res.Machine = m
	return res, nil
}

// createOptions checks machine.connect's create param with the driver's own
// create rules: a rule of one option (cpus, mounts) broken is invalid_params
// naming it; what orbctl would misread (a value starting with '-') stays the
// driver's bad_argument.
func createOptions(machine string, spec CreateSpec) (orbctl.CreateOptions, error) {
	o := orbctl.CreateOptions{Image: spec.Image, Name: machine, Arch: spec.Arch, User: spec.User,
		UserData: spec.UserData, Isolated: spec.Isolated, IsolateNetwork: spec.IsolateNetwork,
		CPUs: spec.CPUs, Memory: spec.Memory, Disk: spec.Disk, Mounts: spec.Mounts}
	switch {
	case spec.Image == "":
		return o, invalidParams("create.image", "create needs an image such as \"debian:bookworm\"")
	case spec.UserData != "" && !filepath.IsAbs(spec.UserData):
		return o, invalidParams("create.user_data", "create.user_data must be an absolute path, got %q", spec.UserData)
	}
	var oe *orbctl.Error
	if err := orbctl.CheckCreate(o); errors.As(err, &oe) && oe.Option != "" {
		return o, invalidParams("create."+oe.Option, "create.%s: %s", oe.Option, oe.Error())
	} else if err != nil {
		return o, err
	}
	return o, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
