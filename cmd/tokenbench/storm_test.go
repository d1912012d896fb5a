package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// devicesByID is the verifier's view of registered ES256 devices.
type devicesByID map[string]domain.Device

func (m devicesByID) GetDevice(_ context.Context, id string) (domain.Device, error) {
	d, ok := m[id]
	if !ok {
		return domain.Device{}, store.ErrNotFound
	}
	return d, nil
}

func mustKeyDevice(t *testing.T, id string) keyDevice {
	t.Helper()
	d, err := newKeyDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func registered(t *testing.T, devs ...keyDevice) devicesByID {
	t.Helper()
	m := devicesByID{}
	for _, d := range devs {
		pub, err := d.publicKeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		m[d.ID] = domain.Device{ID: d.ID, Hub: "h", Auth: domain.Credential{Type: domain.CredES256, PublicKey: pub}}
	}
	return m
}

// TestES256AssertionsPassTheServiceVerifier checks the storm's assertions with the
// service's own deviceauth.Verifier: accepted as signed, refused when they would be
// refused from a real device (wrong audience, someone else's key, a replayed jti,
// outside the verifier's clock window).
func TestES256AssertionsPassTheServiceVerifier(t *testing.T) {
	now := time.Now()
	alice, bob := mustKeyDevice(t, "alice"), mustKeyDevice(t, "bob")
	tests := []struct {
		name      string
		signer    keyDevice // whose key signs
		as        string    // device ID in iss/sub
		audience  string
		jti       string
		signedAt  time.Time
		wantValid bool
	}{
		{"valid", alice, "alice", "tokensvc", "j1", now, true},
		{"another valid jti", alice, "alice", "tokensvc", "j2", now, true},
		{"replayed jti", alice, "alice", "tokensvc", "j1", now, false},
		{"wrong audience", alice, "alice", "other", "j3", now, false},
		{"signed with another device's key", bob, "alice", "tokensvc", "j4", now, false},
		{"signed 10 minutes ago", alice, "alice", "tokensvc", "j5", now.Add(-10 * time.Minute), false},
		{"second device", bob, "bob", "tokensvc", "j1", now, true},
	}
	v := deviceauth.NewVerifier(registered(t, alice, bob), "tokensvc", func() time.Time { return now })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.signer
			d.ID = tt.as
			jwt, err := signES256(d, tt.audience, tt.jti, tt.signedAt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(t.Context(), jwt)
			if tt.wantValid && (err != nil || got.ID != tt.as) {
				t.Fatalf("got %q, %v; want accepted as %s", got.ID, err, tt.as)
			}
			if !tt.wantValid && !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Fatalf("got %v, want ErrUnauthenticated", err)
			}
		})
	}
}

func TestStormConfigValidate(t *testing.T) {
	dir := t.TempDir()
	env := func(k string) string {
		if k == "TOKENSVC_ADMIN_TOKEN" {
			return "0123456789abcdef0123"
		}
		return ""
	}
	noAdmin := func(string) string { return "" }
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"loopback with cacert", []string{"-url", "https://127.0.0.1:8443", "-cacert", "ca.pem"}, env, ""},
		{"localhost insecure", []string{"-url", "https://localhost:8443", "-insecure"}, env, ""},
		{"plain http", []string{"-url", "http://127.0.0.1:8080", "-insecure"}, env, "want https"},
		{"remote host", []string{"-url", "https://10.0.0.1:8443", "-insecure"}, env, "only loopback"},
		{"remote metrics", []string{"-insecure", "-metrics-url", "http://example.com/metrics"}, env, "-metrics-url"},
		{"no trust decision", nil, env, "-cacert FILE or -insecure"},
		{"both trust flags", []string{"-cacert", "ca.pem", "-insecure"}, env, "-cacert FILE or -insecure"},
		{"no admin token", []string{"-insecure"}, noAdmin, "TOKENSVC_ADMIN_TOKEN"},
		{"no devices", []string{"-insecure", "-devices", "0"}, env, "-devices"},
		{"too many devices", []string{"-insecure", "-devices", "1000001"}, env, "-devices"},
		{"unbounded duration", []string{"-insecure", "-max-duration", "0"}, env, "-max-duration"},
		{"too long", []string{"-insecure", "-max-duration", "31m"}, env, "-max-duration"},
		{"no workers", []string{"-insecure", "-c", "0"}, env, "-c"},
		{"baseline without its certificate", []string{"-insecure", "-baseline"}, env, "-tls-cert"},
		{"baseline with certificate", []string{"-insecure", "-baseline", "-tls-cert", filepath.Join(dir, "c"), "-tls-key", filepath.Join(dir, "k")}, env, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseStormConfig(tt.args, tt.getenv, &strings.Builder{})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

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
	var devs []keyDevice
	for _, id := range ids {
		devs = append(devs, mustKeyDevice(t, id))
	}
	var dials atomic.Int64
	client := newStormClient(tlsCfg, &dials)
	p := stormParams{name: "t", url: srv.URL + "/token", workers: 2, audience: "tokensvc", deadline: 20 * time.Second, maxWait: 5 * time.Second, timeout: 5 * time.Second}
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
	if r.DeviceMax < Millis(time.Second) {
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
	devs := []keyDevice{mustKeyDevice(t, "a"), mustKeyDevice(t, "b")}
	var dials atomic.Int64
	p := stormParams{name: "t", url: srv.URL, workers: 2, audience: "x", deadline: 1500 * time.Millisecond, maxWait: time.Second, timeout: time.Second}
	start := time.Now()
	r := runStorm(t.Context(), newStormClient(tlsCfg, &dials), p, devs)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("storm took %v, want it to stop at its 1.5 s deadline", took)
	}
	if r.Served != 0 || r.Failed != 0 || r.Unfinished != 2 || !r.Interrupted || r.Refusals["429"] < 2 {
		t.Errorf("got served %d failed %d unfinished %d interrupted %v refusals %v; want 0 0 2 true ≥2",
			r.Served, r.Failed, r.Unfinished, r.Interrupted, r.Refusals)
	}
}

func TestReadImportReport(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    importTally
		wantErr bool
	}{
		{"all created", `{"line":1,"deviceId":"a","result":"created","primaryKey":"k"}
{"line":2,"deviceId":"b","result":"created"}
{"result":"summary","summary":{"created":2,"skipped":0,"rejected":0}}
`, importTally{Created: 2, Summary: true}, false},
		{"one rejected", `{"line":1,"deviceId":"a","result":"rejected","reason":"auth.publicKey: not a PEM"}
{"result":"summary","summary":{"created":0,"skipped":0,"rejected":1}}
`, importTally{Rejected: 1, FirstReason: "auth.publicKey: not a PEM", Summary: true}, false},
		{"no summary", `{"line":1,"deviceId":"a","result":"created"}` + "\n", importTally{}, true},
		{"summary disagrees", `{"line":1,"deviceId":"a","result":"created"}
{"result":"summary","summary":{"created":5}}
`, importTally{}, true},
		{"import stopped", `{"result":"summary","summary":{"created":0},"error":"reading the body failed"}` + "\n", importTally{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readImportReport(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got err %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"status file", "Name:\ttokensvc\nVmPeak:\t 1300000 kB\nVmHWM:\t   30820 kB\nVmRSS:\t   30000 kB\n", 30820 << 10, false},
		{"missing", "Name:\tx\n", 0, true},
		{"odd unit", "VmHWM:\t 12 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmHWM(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if n, err := peakRSS(0); err != nil || n <= 0 {
		t.Errorf("own peak RSS: got %d, %v", n, err)
	}
}

func TestParseCounters(t *testing.T) {
	const text = `# HELP tokensvc_key_cache_backend_reads_total Device and hub reads.
# TYPE tokensvc_key_cache_backend_reads_total counter
tokensvc_key_cache_backend_reads_total 101
tokensvc_store_operation_duration_seconds_count{op="get_device"} 7
tokensvc_store_operation_duration_seconds_count{op="get_hub"} 2
tokensvc_store_operation_duration_seconds_sum{op="get_device"} 0.5
`
	got, err := parseCounters(strings.NewReader(text), storeReadMetrics)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]float64{"tokensvc_key_cache_backend_reads_total": 100}
	d := counterDelta(before, got)
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

// TestSelfSignedServesLoopbackTLS: the written certificate serves TLS for 127.0.0.1 and
// is what -cacert trusts.
func TestSelfSignedServesLoopbackTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := selfSigned([]string{"-cert", cert, "-key", key}, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	base, stop, err := startBaseline("127.0.0.1:0", 100, mustServerTLS(t, cert, key))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	tlsCfg, err := stormTLSConfig(cert, false, false)
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	o := tryToken(t.Context(), newStormClient(tlsCfg, &dials), base+"/token", 5*time.Second, "x")
	if o.kind != outcomeOK || o.resumed {
		t.Fatalf("got %+v, want a fresh 2xx exchange", o)
	}
}

func mustServerTLS(t *testing.T, cert, key string) *tls.Config {
	t.Helper()
	c, err := tlsServerConfig(cert, key)
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

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestTransportClass(t *testing.T) {
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "https://127.0.0.1:1/token", Err: err} }
	tests := []struct {
		err  error
		want string
	}{
		{wrap(context.DeadlineExceeded), "timeout"},
		{wrap(errors.New("net/http: TLS handshake timeout")), "TLS handshake timeout"},
		{wrap(&net.OpError{Op: "read", Err: timeoutErr{}}), "timeout"},
		{wrap(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), "connection refused"},
		{wrap(&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), "connection reset"},
		{wrap(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}), "no local port left"},
		{wrap(io.EOF), "connection closed early"},
		{wrap(tls.AlertError(40)), "TLS error"},
		{wrap(errors.New("something else")), "transport"},
	}
	for _, tt := range tests {
		if got := transportClass(tt.err); got != tt.want {
			t.Errorf("%v: got %q, want %q", tt.err, got, tt.want)
		}
	}
}
