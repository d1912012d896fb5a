package bench

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProfilerValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       Profiler
		wantErr string
	}{
		{"off", Profiler{}, ""},
		{"loopback", Profiler{URL: "http://127.0.0.1:9090/debug/pprof", Max: 20 * time.Second}, ""},
		{"off this machine", Profiler{URL: "http://10.1.2.3:9090/debug/pprof", Max: 20 * time.Second}, "-pprof-url"},
		{"too short", Profiler{URL: "http://127.0.0.1:9090/debug/pprof", Max: time.Millisecond}, "-pprof-seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("got %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}

// TestProfilerFetchesBothProfiles: one CPU and one alloc profile per phase, of the
// phase's length capped by Max, into Dir; a failing endpoint is an error.
func TestProfilerFetchesBothProfiles(t *testing.T) {
	asked := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- r.URL.Path + "?" + r.URL.RawQuery
		_, _ = w.Write([]byte("profile " + r.URL.Path))
	}))
	defer srv.Close()
	dir := t.TempDir()
	p := Profiler{URL: srv.URL + "/debug/pprof/", Dir: dir, Max: 3 * time.Second}
	if err := p.Start(t.Context(), srv.Client(), "tokensvc", 10*time.Second)(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{<-asked: true, <-asked: true}
	for _, want := range []string{"/debug/pprof/profile?seconds=3", "/debug/pprof/allocs?seconds=3"} {
		if !got[want] {
			t.Errorf("requests: got %v, want %s", got, want)
		}
	}
	for _, f := range []string{"tokensvc.cpu.pprof", "tokensvc.allocs.pprof"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || !strings.HasPrefix(string(b), "profile ") {
			t.Errorf("%s: got %q, %v", f, b, err)
		}
	}
	if err := (Profiler{}).Start(t.Context(), srv.Client(), "x", time.Second)(); err != nil {
		t.Errorf("without a URL: got %v, want nothing done", err)
	}
	if len(asked) != 0 {
		t.Errorf("without a URL: a request was made")
	}

	refusing := httptest.NewServer(http.NotFoundHandler()) // pprof not switched on
	defer refusing.Close()
	p.URL = refusing.URL + "/debug/pprof"
	if err := p.Start(t.Context(), refusing.Client(), "off", time.Second)(); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("profiler off: got %v, want the 404 reported", err)
	}
}

// TestStartCPUSendsTheHeader: another process's CPU profile (Vault's sys/pprof) is
// fetched with the given header, capped by Max, into Dir/<name>.cpu.pprof.
func TestStartCPUSendsTheHeader(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") != "root-x" || r.URL.RawQuery != "seconds=2" {
			http.Error(w, "denied", http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte("vault profile"))
	}))
	defer srv.Close()
	dir := t.TempDir()
	p := Profiler{Dir: dir, Max: 2 * time.Second}
	url := srv.URL + "/v1/sys/pprof/profile"
	if err := p.StartCPU(t.Context(), srv.Client(), url, http.Header{"X-Vault-Token": {"root-x"}}, "vault.raw", 5*time.Second)(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "vault.raw.cpu.pprof")); err != nil || string(b) != "vault profile" {
		t.Errorf("vault.raw.cpu.pprof: got %q, %v", b, err)
	}
	if err := p.StartCPU(t.Context(), srv.Client(), url, nil, "vault.kv", 5*time.Second)(); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("without the header: got %v, want the 403 reported", err)
	}
}
