package testbin_test

import (
	"os/exec"
	"syscall"
	"testing"

	"github.com/tokensvc/tokensvc/internal/testbin"
)

func TestFind(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh on PATH: %v", err)
	}
	t.Run("the variable wins", func(t *testing.T) {
		t.Setenv("TESTBIN_PROGRAM", "/opt/x/program")
		if got := testbin.Find(t, "TESTBIN_PROGRAM", "sh", "unused"); got != "/opt/x/program" {
			t.Errorf("Find = %q, want the variable's /opt/x/program", got)
		}
	})
	t.Run("then PATH", func(t *testing.T) {
		t.Setenv("TESTBIN_PROGRAM", "")
		if got := testbin.Find(t, "TESTBIN_PROGRAM", "sh", "unused"); got != sh {
			t.Errorf("Find = %q, want %q from PATH", got, sh)
		}
	})
}

func TestProcess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh on PATH: %v", err)
	}
	var p testbin.Process
	if p.Running() {
		t.Fatal("zero Process: Running = true, want false")
	}
	if _, ok := p.Signal(syscall.SIGCONT); ok {
		t.Fatal("zero Process: Signal ok, want no run to signal")
	}
	p.Kill() // no run: nothing to do
	for run := range 2 {
		exited := p.Start(t, exec.Command(sh, "-c", "sleep 60"))
		if !p.Running() {
			t.Fatalf("run %d: Running = false after Start", run)
		}
		if pid, ok := p.Signal(syscall.SIGCONT); !ok || pid <= 0 {
			t.Fatalf("run %d: Signal = %d, %v; want the run's pid", run, pid, ok)
		}
		p.Kill()
		select {
		case <-exited:
		default:
			t.Fatalf("run %d: exit channel open after Kill", run)
		}
		if p.Running() {
			t.Fatalf("run %d: Running = true after Kill", run)
		}
	}
}
