package execsink_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
			sas, err := tmpl.Parse("SAS", "{{ .Token }}")
			if err != nil {
				t.Fatal(err)
			}
			sup, err := execsink.New(execsink.Config{
				Command: []string{"/bin/sh", "-c", tt.script}, Env: []execsink.Env{{Name: "SAS", Template: sas}},
				OnChange: tt.onChange, StopTimeout: 2 * time.Second,
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
