package execsink_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/execsink"
	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

func tok(v string) token.Token {
	now := time.Now()
	return token.Token{Response: oapi.TokenResponse{Token: v, ServerTime: now, ExpiresAt: now.Add(time.Hour), RefreshAfter: now.Add(48 * time.Minute)}, RequestedAt: now}
}

// TestChildFollowsTheToken runs a real shell child that records the token from its
// environment: restart mode restarts it with the new value; signal mode signals it.
func TestChildFollowsTheToken(t *testing.T) {
	tests := []struct {
		name      string
		onChange  execsink.OnChange
		script    string
		wantLines []string
	}{
		{"restart", execsink.Restart, `echo "start $SAS" >> "$OUT"; exec sleep 60`, []string{"start tok-1", "start tok-2"}},
		{"signal", execsink.Signal, `echo "start $SAS" >> "$OUT"; trap 'echo hup >> "$OUT"' HUP; while :; do sleep 0.05; done`, []string{"start tok-1", "hup"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			t.Setenv("OUT", out)
			h, cancel, done := runChild(t, tt.script, tt.onChange, 2*time.Second)
			waitLines(t, out, 1)
			h.Set(tok("tok-2"))
			waitLines(t, out, 2)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: got %v, want nil", err)
			}
			b, _ := os.ReadFile(out)
			if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !slices.Equal(got, tt.wantLines) {
				t.Errorf("child saw %q, want %q", b, strings.Join(tt.wantLines, "\n"))
			}
		})
	}
}

// runChild runs a sink whose child is the shell script, with the token in $SAS, on a
// holder that has tok-1; cancel stops it and done has Run's result.
func runChild(t *testing.T, script string, onChange execsink.OnChange, stopTimeout time.Duration) (*token.Holder, context.CancelFunc, <-chan error) {
	t.Helper()
	sas, err := tmpl.Parse("SAS", "{{ .Token }}")
	if err != nil {
		t.Fatal(err)
	}
	sup, err := execsink.New(execsink.Config{
		Command: []string{"/bin/sh", "-c", script}, Env: []execsink.Env{{Name: "SAS", Template: sas}},
		OnChange: onChange, StopTimeout: stopTimeout,
		Backoff: backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &token.Holder{}
	h.Set(tok("tok-1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, h) }()
	return h, cancel, done
}

func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), "\n") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child output %q: want %d lines", b, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStopEndsTheChildsProcesses: a child that is a shell running the real program
// (-exec "sh -c '…'", a wrapper script) must not leave that program running with the old
// token when the sink restarts it for a new token or stops: the sink signals the
// child's whole process group, not just the shell, which does not pass SIGTERM on.
func TestStopEndsTheChildsProcesses(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PIDDIR", dir)
	h, cancel, done := runChild(t, `sleep 300 & echo $! > "$PIDDIR/$SAS"; wait`, execsink.Restart, 5*time.Second)
	first := waitPID(t, filepath.Join(dir, "tok-1"))
	h.Set(tok("tok-2"))
	second := waitPID(t, filepath.Join(dir, "tok-2"))
	if !alive(second) {
		t.Fatalf("the new child's program (pid %d) is not running", second)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for name, pid := range map[string]int{"after the restart, the old token's": first, "after the stop, the new token's": second} {
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("%s program (pid %d) still runs", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func waitPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie, killed but not reaped by an init that
// does not reap, does not count).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}
