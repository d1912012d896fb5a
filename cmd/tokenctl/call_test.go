package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// mustStub serves every request with status, content type and body, as a proxy or a
// load balancer in front of tokensvc might.
func mustStub(t *testing.T, status int, contentType, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// mustClosedURL is a loopback URL nothing listens on.
func mustClosedURL(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

// TestFetchErrors drives the one get→check→print path through run: every command but
// import reaches the service through it, and import words its errors the same way.
func TestFetchErrors(t *testing.T) {
	real := mustServer(t)
	ndjson := filepath.Join(t.TempDir(), "devices.ndjson")
	if err := os.WriteFile(ndjson, []byte(`{"deviceId":"d","hub":"h","auth":{"type":"hs256"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		url    string
		token  string
		args   []string
		want   string // the whole error message
		wantIs error  // instead of want, for errors whose text the platform words
	}{
		{
			name: "problem with title and detail", url: real, token: adminToken,
			args: []string{"hubs", "get", "nowhere"},
			want: `404 Not Found: hub "nowhere": not found`,
		},
		{
			name: "problem for a list", url: real, token: "wrong-token-0123456789",
			args: []string{"devices", "list"},
			want: "401 Unauthorized: a valid operator bearer token is required",
		},
		{
			name: "problem for an import, which checks its own status", url: real, token: "wrong-token-0123456789",
			args: []string{"devices", "import", ndjson},
			want: "401 Unauthorized: a valid operator bearer token is required",
		},
		{
			name: "problem with a title only", url: mustStub(t, http.StatusConflict, "application/problem+json", `{"title":"Conflict","status":409}`), token: adminToken,
			args: []string{"devices", "revoke", "d"},
			want: "409 Conflict",
		},
		{
			name: "no body", url: mustStub(t, http.StatusBadGateway, "", ""), token: adminToken,
			args: []string{"hubs", "list"},
			want: "unexpected response 502 Bad Gateway",
		},
		{
			name: "a body that is no problem is not echoed", url: mustStub(t, http.StatusInternalServerError, "text/plain", "upstream said key=c2VjcmV0"), token: adminToken,
			args: []string{"devices", "get", "d"},
			want: "unexpected response 500 Internal Server Error",
		},
		{
			name: "success status without the typed body", url: mustStub(t, http.StatusOK, "text/html", "<html>login</html>"), token: adminToken,
			args: []string{"hubs", "get", "h"},
			want: "unexpected response 200 OK",
		},
		{
			name: "transport error", url: mustClosedURL(t), token: adminToken,
			args:   []string{"hubs", "get", "h"},
			wantIs: syscall.ECONNREFUSED,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := ctl(t, tt.url, tt.token, tt.args...)
			switch {
			case err == nil:
				t.Fatalf("got no error (stdout %q), want one", out)
			case tt.wantIs != nil && !errors.Is(err, tt.wantIs):
				t.Errorf("got error %v, want one that is %v", err, tt.wantIs)
			case tt.wantIs == nil && err.Error() != tt.want:
				t.Errorf("got error %q, want %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("got stdout %q, want nothing on failure", out)
			}
		})
	}
}

func TestVersionFlag(t *testing.T) {
	// No token and no server: -version needs neither.
	out, _, err := ctl(t, "", "", "-version")
	if err != nil || !strings.HasPrefix(out, "tokenctl ") {
		t.Errorf("tokenctl -version: got %q, %v, want a line starting with %q", out, err, "tokenctl ")
	}
}
