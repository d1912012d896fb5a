package testbin

import (
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Process is the run of an external program behind a test server, one at a time:
// started, killed with SIGKILL and started again (a restart on the same data), from
// any goroutine. The zero value has no run.
type Process struct {
	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while no run is going
	exited chan struct{} // closed once cmd has exited
}

// Start starts cmd and returns a channel closed when it exits. It fails tb when a run
// is still going or cmd does not start.
func (p *Process) Start(tb testing.TB, cmd *exec.Cmd) <-chan struct{} {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		tb.Fatalf("testbin: %s is still running", cmd.Path)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	return exited
}

// Kill ends the run with SIGKILL (stopped or not) and waits until it has exited;
// without a run it does nothing.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.cmd, p.exited = nil, nil
}

// Running reports whether a run was started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the run and returns its process ID; ok is false without a run.
func (p *Process) Signal(sig os.Signal) (pid int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0, false
	}
	_ = p.cmd.Process.Signal(sig)
	return p.cmd.Process.Pid, true
}
