package socksink_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/socksink"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestSinkServesTheToken serves a Holder on a real socket: 503 before the first
// token, then the token, the connection string and the JSON; the socket has mode 0600.
func TestSinkServesTheToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.sock")
	s, err := socksink.New(socksink.Config{Path: path}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &token.Holder{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, h) }()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	get := func(p string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := hc.Get("http://agent" + p)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", p, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if code, _ := get("/token"); code != http.StatusServiceUnavailable {
		t.Errorf("before a token: got %d, want 503", code)
	}
	now := time.Now()
	cs := "HostName=h;SharedAccessSignature=sas-1"
	h.Set(token.Token{Response: oapi.TokenResponse{Token: "sas-1", ConnectionString: &cs, ServerTime: now,
		ExpiresAt: now.Add(time.Hour), RefreshAfter: now.Add(48 * time.Minute)}, RequestedAt: now})
	tests := []struct {
		path string
		want string
	}{
		{"/token", "sas-1\n"},
		{"/connection-string", cs + "\n"},
		{"/token.json", `"connectionString":"` + cs + `"`},
	}
	for _, tt := range tests {
		code, body := get(tt.path)
		if code != http.StatusOK || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: got %d %q, want 200 with %q", tt.path, code, body, tt.want)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode: got %v, want 0600", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
}
