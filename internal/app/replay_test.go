package app_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/redistest"
)

// TestReadyzNamesTheReplayStoreProblem: /readyz says why device tokens are refused — an
// unreachable replay store, or one that may evict consumed values (a memory limit with a
// policy other than noeviction), which redisreplay refuses.
func TestReadyzNamesTheReplayStoreProblem(t *testing.T) {
	srv := redistest.Start(t)
	c := testConfig(t.TempDir())
	c.Replay.URL, c.Replay.Password = srv.URL(), srv.Password
	a, err := app.New(t.Context(), c, quiet(), app.WithStdout(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	readyz := func() string {
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Body.String()
	}
	if body := readyz(); strings.Contains(body, "replay store") {
		t.Fatalf("noeviction server: /readyz %s, want no replay store note", body)
	}

	// The policy is read again once a minute; a new replica (app) reads it at once.
	rc := srv.Client(t)
	for _, kv := range [][2]string{{"maxmemory", "64mb"}, {"maxmemory-policy", "volatile-lru"}} {
		if err := rc.ConfigSet(t.Context(), kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c.DataDir = t.TempDir() // the embedded store is one process's
	b, err := app.New(t.Context(), c, quiet(), app.WithStdout(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	rec := httptest.NewRecorder()
	b.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if body := rec.Body.String(); !strings.Contains(body, "replay store may evict keys (set maxmemory-policy noeviction)") {
		t.Errorf("evicting server: /readyz %s, want the eviction note", body)
	}

	srv.Kill()
	if body := readyz(); !strings.Contains(body, "replay store unreachable") {
		t.Errorf("killed server: /readyz %s, want the unreachable note", body)
	}
}
