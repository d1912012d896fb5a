package storm

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// stormServer is a TLS test server whose handler decides per request; it counts the
// connections it accepted and whether any TLS session was resumed.
func stormServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *tls.Config, *atomic.Int64) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, &tls.Config{RootCAs: pool, SessionTicketsDisabled: true}, &conns
}

// TestStormRetryAfter: refusals with Retry-After are counted apart from errors, the
// same device comes back after the delay with a new assertion, other statuses fail the
// device, and every exchange is a new connection.
func TestStormRetryAfter(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}            // attempts per device
	refusedAt := map[string]time.Time{} // when the device was refused
	retryGap := map[string]time.Duration{}
	jtis := map[string]bool{}
	srv, tlsCfg, conns := stormServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		jwt := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		jtis[jwt] = true
		dev := deviceFromJWT(t, jwt)
		seen[dev]++
		n := seen[dev]
		switch {
		case dev == "d-429" && n == 1:
			refusedAt[dev] = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case dev == "d-503" && n == 1:
			refusedAt[dev] = time.Now()
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		case dev == "d-503-bare":
			w.WriteHeader(http.StatusServiceUnavailable)
		case dev == "d-500":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			if !refusedAt[dev].IsZero() {
				retryGap[dev] = time.Since(refusedAt[dev])
			}
			w.Write([]byte(`{"token":"x"}`))
		}
	})
	ids := []string{"d-ok-1", "d-429", "d-503", "d-503-bare", "d-500", "d-ok-2"}
	var devs []bench.KeyDevice
	for _, id := range ids {
		devs = append(devs, mustKeyDevice(t, id))
	}
	var dials atomic.Int64
	client := newClient(tlsCfg, &dials)
	p := params{name: "t", url: srv.URL + "/token", workers: 2, audience: "tokensvc", deadline: 20 * time.Second, maxWait: 5 * time.Second, timeout: 5 * time.Second}
	r := runStorm(t.Context(), client, p, devs)

	checks := []struct {
		what      string
		got, want any
	}{
		{"served", r.Served, 4},
		{"failed", r.Failed, 2},
		{"unfinished", r.Unfinished, 0},
		{"attempts", r.Attempts, 8},
		{"refusals 429", r.Refusals["429"], 1},
		{"refusals 503", r.Refusals["503"], 1},
		{"errors 500", r.Errors["500"], 1},
		{"errors 503 without Retry-After", r.Errors["503 without Retry-After"], 1},
		{"distinct assertions", len(jtis), 8},
		{"connections dialled", int(dials.Load()), 8},
		{"connections accepted", int(conns.Load()), 8},
		{"resumed sessions", r.Resumed, 0},
		{"interrupted", r.Interrupted, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	if g := retryGap["d-429"]; g < time.Second {
		t.Errorf("d-429 came back %v after Retry-After: 1, want ≥ 1s", g)
	}
	if r.DeviceMax < bench.Millis(time.Second) {
		t.Errorf("slowest device completion %v, want ≥ 1s (it waited out a Retry-After)", time.Duration(r.DeviceMax))
	}
}

// TestStormStopsAtDeadline: a storm against a service that refuses forever ends at its
// deadline with the devices unfinished, not failed.
func TestStormStopsAtDeadline(t *testing.T) {
	srv, tlsCfg, _ := stormServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	devs := []bench.KeyDevice{mustKeyDevice(t, "a"), mustKeyDevice(t, "b")}
	var dials atomic.Int64
	p := params{name: "t", url: srv.URL, workers: 2, audience: "x", deadline: 1500 * time.Millisecond, maxWait: time.Second, timeout: time.Second}
	start := time.Now()
	r := runStorm(t.Context(), newClient(tlsCfg, &dials), p, devs)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("storm took %v, want it to stop at its 1.5 s deadline", took)
	}
	if r.Served != 0 || r.Failed != 0 || r.Unfinished != 2 || !r.Interrupted || r.Refusals["429"] < 2 {
		t.Errorf("got served %d failed %d unfinished %d interrupted %v refusals %v; want 0 0 2 true ≥2",
			r.Served, r.Failed, r.Unfinished, r.Interrupted, r.Refusals)
	}
}

// TestSelfSignedServesLoopbackTLS: the written certificate serves TLS for 127.0.0.1 and
// is what -cacert trusts.
func TestSelfSignedServesLoopbackTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := bench.SelfSigned([]string{"-cert", cert, "-key", key}, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	base, stop, err := bench.StartBaseline("127.0.0.1:0", 100, mustServerTLS(t, cert, key))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	tlsCfg, err := clientTLSConfig(cert, false, false)
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	o := bench.TryToken(t.Context(), newClient(tlsCfg, &dials), base+"/token", 5*time.Second, "x")
	if o.Kind != bench.OutcomeOK || o.Resumed {
		t.Fatalf("got %+v, want a fresh 2xx exchange", o)
	}
}

func mustServerTLS(t *testing.T, cert, key string) *tls.Config {
	t.Helper()
	c, err := bench.TLSServerConfig(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deviceFromJWT reads sub from an unverified assertion (test server only).
func deviceFromJWT(t *testing.T, jwt string) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Errorf("assertion %q is not a compact JWT", jwt)
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Error(err)
		return ""
	}
	i := strings.Index(string(b), `"sub":`)
	if i < 0 {
		return ""
	}
	s, err := strconv.QuotedPrefix(string(b[i+6:]))
	if err != nil {
		t.Error(err)
		return ""
	}
	id, _ := strconv.Unquote(s)
	return id
}

func TestParseCounters(t *testing.T) {
	const text = `# HELP tokensvc_key_cache_backend_reads_total Device and hub reads.
# TYPE tokensvc_key_cache_backend_reads_total counter
tokensvc_key_cache_backend_reads_total 101
tokensvc_store_operation_duration_seconds_count{op="get_device"} 7
tokensvc_store_operation_duration_seconds_count{op="get_hub"} 2
tokensvc_store_operation_duration_seconds_sum{op="get_device"} 0.5
`
	got, err := bench.ParseCounters(strings.NewReader(text), bench.StoreReadMetrics)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]float64{"tokensvc_key_cache_backend_reads_total": 100}
	d := bench.CounterDelta(before, got)
	if len(got) != 3 || d["tokensvc_key_cache_backend_reads_total"] != 1 || d[`tokensvc_store_operation_duration_seconds_count{op="get_device"}`] != 7 {
		t.Errorf("got %v, delta %v", got, d)
	}
	if s := storeReads(d); !strings.Contains(s, "1 Vault reads") {
		t.Errorf("storeReads: got %q, want the Vault read count", s)
	}
	delete(d, "tokensvc_key_cache_backend_reads_total")
	if s := storeReads(d); !strings.Contains(s, "Vault n/a") || !strings.Contains(s, "get_device×7") {
		t.Errorf("storeReads without a key cache: got %q", s)
	}
}

func mustKeyDevice(t *testing.T, id string) bench.KeyDevice {
	t.Helper()
	d, err := bench.NewKeyDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
