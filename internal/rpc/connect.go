package rpc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// DefaultConnectTimeout bounds how long machine.connect waits for a machine to
// answer commands when the client gives no timeout.
const DefaultConnectTimeout = 120 * time.Second

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
	// Hosts connecting to the same machine at once would otherwise race to
	// create or start it; the second one waits and finds it running.
	unlock, err := s.lockMachine(ctx, p.Machine)
	if err != nil {
		return nil, err
	}
	defer unlock()

	var res MachineConnectResult
	m, err := c.Info(ctx, p.Machine)
	if errors.Is(err, orbctl.ErrMachineNotFound) && p.Create != nil {
		opts, optsErr := createOptions(p.Machine, *p.Create)
		if optsErr != nil {
			return nil, optsErr
		}
		err = c.Create(ctx, opts)
		if err != nil {
			return nil, err
		}
		res.Created = true
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
	timeout := DefaultConnectTimeout
	if p.Timeout > 0 {
		timeout = seconds(p.Timeout)
	}
	deadline := time.Now().Add(timeout)
	if m.State != "running" {
		startCtx, cancel := context.WithDeadline(ctx, deadline)
		err := c.Start(startCtx, m.Name)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, &orbctl.Error{Kind: orbctl.ErrNotReady, Machine: m.Name, Args: []string{"start", m.Name},
				Message: fmt.Sprintf("machine %s did not start within %s", m.Name, timeout)}
		}
		if err != nil {
			return nil, err
		}
		res.Started = true
	}
	if err := c.WaitReady(ctx, m.Name, time.Until(deadline)); err != nil {
		return nil, err
	}
	if m, err = c.Info(ctx, m.Name); err != nil {
		return nil, err
	}
	res.Machine = m
	return res, nil
}

// createOptions checks machine.connect's create param; what orbctl would
// misread (a value starting with '-') the driver refuses as bad_argument.
func createOptions(machine string, spec CreateSpec) (orbctl.CreateOptions, error) {
	o := orbctl.CreateOptions{Image: spec.Image, Name: machine, Arch: spec.Arch, User: spec.User,
		UserData: spec.UserData, Isolated: spec.Isolated, IsolateNetwork: spec.IsolateNetwork,
		CPUs: spec.CPUs, Memory: spec.Memory, Disk: spec.Disk, Mounts: spec.Mounts}
	switch {
	case spec.Image == "":
		return o, invalidParams("create.image", "create needs an image such as \"debian:bookworm\"")
	case spec.UserData != "" && !filepath.IsAbs(spec.UserData):
		return o, invalidParams("create.user_data", "create.user_data must be an absolute path, got %q", spec.UserData)
	case spec.CPUs < 0:
		return o, invalidParams("create.cpus", "create.cpus must not be negative, got %d", spec.CPUs)
	case len(spec.Mounts) > 0 && !spec.Isolated:
		return o, invalidParams("create.mounts", "create.mounts needs \"isolated\": true (OrbStack mounts folders only into isolated machines)")
	}
	return o, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
