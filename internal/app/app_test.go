package app_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

func testConfig(dir string) app.Config {
	c := app.Defaults()
	c.Addr = "127.0.0.1:0"
	c.DataDir = dir
	return c
}

func quiet() app.Option { return app.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))) }

// TestServeStopRestart serves the built service, stops it as SIGTERM would, and builds
// it again over the same data directory: the admin token generated at the first start
// is printed once, and the second start reads its hash instead.
func TestServeStopRestart(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	out := &syncbuf.Buffer{}
	a, err := app.New(t.Context(), testConfig(dir), quiet(), app.WithStdout(out), app.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	for _, path := range []string{"/readyz", "/metrics"} {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: got %d, want 200", path, resp.StatusCode)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := strings.Count(out.String(), "generated admin token"); n != 1 {
		t.Errorf("first start printed %d admin tokens, want 1:\n%s", n, out)
	}
	mfs, err := reg.Gather()
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "tokensvc_http_request_duration_seconds"
	}
	if err != nil || !found {
		t.Errorf("registry given with WithRegistry lacks the service's metrics (%v)", err)
	}

	out = &syncbuf.Buffer{}
	b, err := app.New(t.Context(), testConfig(dir), quiet(), app.WithStdout(out))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); s != "" {
		t.Errorf("restart printed %q, want nothing: the hash was kept", s)
	}
}

// TestNewRefusesBadConfiguration checks the configuration before anything is opened.
func TestNewRefusesBadConfiguration(t *testing.T) {
	tests := []struct {
		name    string
		change  func(c *app.Config)
		wantErr string
	}{
		{"unknown store", func(c *app.Config) { c.Store = "redis" }, `store "redis"`},
		{"missing client CA", func(c *app.Config) {
			c.TLSCert, c.TLSKey, c.ClientAuth, c.ClientCA = "c.pem", "k.pem", "optional", filepath.Join(c.DataDir, "absent.pem")
		}, "client ca"},
		{"missing TLS certificate", func(c *app.Config) { c.TLSCert, c.TLSKey = "c.pem", "k.pem" }, "tls certificate"},
		{"issuer not a URL", func(c *app.Config) { c.Issuer.Issuer = "tokensvc" }, "issuer url"},
		{"issuer over http", func(c *app.Config) { c.Issuer.Issuer = "http://tokens.example.com" }, "must be https"},
		{"issuer with query", func(c *app.Config) { c.Issuer.Issuer = "https://tokens.example.com/?a=b" }, "issuer url"},
		{"issuer lead within the JWKS max-age", func(c *app.Config) { c.Issuer.Lead = 5 * time.Minute }, "issuer key lead"},
		{"issuer max lifetime zero", func(c *app.Config) { c.Issuer.MaxLifetime = 0 }, "issuer max lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t.TempDir())
			tt.change(&c)
			_, err := app.New(t.Context(), c, quiet(), app.WithStdout(io.Discard))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestMissingMasterKeyBesideAStore: with the store file present and its key file gone,
// start fails naming the missing file, and writes no new key (which could never open
// the store and would sit where the restored key belongs).
func TestMissingMasterKeyBesideAStore(t *testing.T) {
	dir := t.TempDir()
	a, err := app.New(t.Context(), testConfig(dir), quiet(), app.WithStdout(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "master.key")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	_, err = app.New(t.Context(), testConfig(dir), quiet(), app.WithStdout(io.Discard))
	if err == nil || !strings.Contains(err.Error(), "master key file "+keyFile+" is missing") {
		t.Fatalf("start without the key file: got %v, want it named as missing", err)
	}
	if _, err := os.Stat(keyFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a new key file was written beside the store (stat: %v)", err)
	}
}
