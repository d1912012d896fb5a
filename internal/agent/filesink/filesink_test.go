package filesink_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"text/template"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/filesink"
	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

func tok(v string) token.Token {
	now := time.Now()
	cs := "HostName=h;SharedAccessSignature=" + v
	return token.Token{Response: oapi.TokenResponse{Token: v, ConnectionString: &cs, ServerTime: now,
		ExpiresAt: now.Add(time.Hour), RefreshAfter: now.Add(48 * time.Minute)}, RequestedAt: now}
}

func mustParse(tb testing.TB, text string) *template.Template {
	tb.Helper()
	t, err := tmpl.Parse("t", text)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// TestSinkWritesEveryFile renders new and old style templates for each token, with the
// configured modes.
func TestSinkWritesEveryFile(t *testing.T) {
	dir := t.TempDir()
	files := []filesink.File{
		{Template: mustParse(t, "{{ .ConnectionString }}"), Path: filepath.Join(dir, "new")},
		{Template: mustParse(t, "{{ deref .ConnectionString }}"), Path: filepath.Join(dir, "old"), Mode: 0o640},
	}
	s, err := filesink.New(filesink.Config{Files: files}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &token.Holder{}
	h.Set(tok("sas-1"))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, h) }()
	waitFor(t, files[1].Path, "HostName=h;SharedAccessSignature=sas-1")
	h.Set(tok("sas-2"))
	for _, f := range files {
		waitFor(t, f.Path, "HostName=h;SharedAccessSignature=sas-2")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	for _, tt := range []struct {
		path string
		want os.FileMode
	}{{files[0].Path, 0o600}, {files[1].Path, 0o640}} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tt.want {
			t.Errorf("%s: mode got %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestNewRefusesEmptyConfig(t *testing.T) {
	tests := []struct {
		name string
		c    filesink.Config
	}{
		{"no files", filesink.Config{}},
		{"no path", filesink.Config{Files: []filesink.File{{Template: mustParse(t, "x")}}}},
		{"no template", filesink.Config{Files: []filesink.File{{Path: "/tmp/x"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := filesink.New(tt.c, nil); err == nil {
				t.Error("got nil error, want one")
			}
		})
	}
}

func waitFor(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %q, want %q", path, b, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
