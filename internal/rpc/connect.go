package rpc

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// DefaultConnectTimeout bounds how long machine.connect waits for a machine to
// answer commands when the client gives no timeout.
const DefaultConnectTimeout = 120 * time.Second

func (s *Server) machineLock(name string) *sync.Mutex {
	l, _ := s.machineLocks.LoadOrStore(name, &sync.Mutex{})
	return l.(*sync.Mutex)
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
	lock := s.machineLock(p.Machine)
	lock.Lock()
	defer lock.Unlock()

	var res MachineConnectResult
	m, err := c.Info(ctx, p.Machine)
	if errors.Is(err, orbctl.ErrMachineNotFound) && p.Create != nil {
		if p.Create.Image == "" {
			return nil, invalidParams("create.image", "create needs an image such as \"debian:bookworm\"")
		}
		err = c.Create(ctx, orbctl.CreateOptions{Image: p.Create.Image, Name: p.Machine, Arch: p.Create.Arch, User: p.Create.User})
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
	if m.State != "running" {
		if !start {
			res.Machine = m
			return res, nil
		}
		if err := c.Start(ctx, m.Name); err != nil {
			return nil, err
		}
		res.Started = true
	}
	timeout := DefaultConnectTimeout
	if p.Timeout > 0 {
		timeout = seconds(p.Timeout)
	}
	if err := c.WaitReady(ctx, m.Name, timeout); err != nil {
		return nil, err
	}
	if m, err = c.Info(ctx, m.Name); err != nil {
		return nil, err
	}
	res.Machine = m
	return res, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
