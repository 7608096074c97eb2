package orbctl

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a long-lived `orbctl run` child whose stdin, stdout and stderr
// belong to the caller (the command sessions of internal/session).
//
// The pipes are made here rather than by exec.Cmd: Cmd.Wait closes its own
// pipes as soon as the child exits, which could drop output still in them, and
// processes inside the machine may hold the write ends after orbctl exits.
type Process struct {
	Stdin  *os.File // write end; closing it is EOF for the command
	Stdout *os.File // read ends
	Stderr *os.File

	cmd       *exec.Cmd
	killDelay time.Duration
	exited    chan struct{}
	closeOnce sync.Once
}

// StartProcess starts spec's command and returns at once; spec's Stdin, Stdout and
// Stderr are ignored (the Process has its own pipes). The command is not tied
// to a context: it lives until Close, or until it exits by itself.
func (c *Client) StartProcess(spec RunSpec) (*Process, error) {
	args, err := RunArgs(spec)
	if err != nil {
		return nil, err
	}
	cmd := c.NewCmd(context.Background(), c.Path, args...)
	var parent, child []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(parent)
			closeAll(child)
			return nil, err
		}
		if i == 0 { // stdin: the child reads
			child, parent = append(child, r), append(parent, w)
		} else {
			child, parent = append(child, w), append(parent, r)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child[0], child[1], child[2]
	start := time.Now()
	err = cmd.Start()
	closeAll(child)
	redacted := redactCommand(args, spec)
	if err != nil {
		closeAll(parent)
		c.trace(redacted, start, err)
		return nil, &Error{Kind: ErrFailed, Machine: spec.Machine, Args: redacted, ExitCode: -1,
			Message: "cannot run " + c.Path + ": " + err.Error()}
	}
	c.trace(redacted, start, nil)
	p := &Process{Stdin: parent[0], Stdout: parent[1], Stderr: parent[2], cmd: cmd, killDelay: c.KillDelay, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the orbctl child has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Close ends the process: EOF on its stdin first (a well-behaved command
// exits), then SIGTERM after grace (forwarded into the machine), then SIGKILL after
// the client's KillDelay. Its read ends are closed too, which unblocks readers
// even when processes left behind in the machine still hold the write ends.
func (p *Process) Close(grace time.Duration) {
	p.closeOnce.Do(func() {
		p.Stdin.Close()
		if !p.waitExit(grace) {
			p.cmd.Process.Signal(syscall.SIGTERM)
			if !p.waitExit(p.killDelay) {
				p.cmd.Process.Kill()
			}
		}
		p.Stdout.Close()
		p.Stderr.Close()
	})
}

func (p *Process) waitExit(d time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill ends the process at once (SIGKILL) and closes its pipes.
func (p *Process) Kill() {
	p.closeOnce.Do(func() {
		p.cmd.Process.Kill()
		p.Stdin.Close()
		p.Stdout.Close()
		p.Stderr.Close()
	})
}
