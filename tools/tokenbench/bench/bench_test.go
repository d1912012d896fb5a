package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p95 of 1..100", ms(hundred...), 95, 95 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p50 of four rounds up the rank", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of four is the max", ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSummarizeMergesWorkers(t *testing.T) {
	a, b := NewTally(), NewTally()
	a.Lat = []time.Duration{3 * time.Millisecond, 1 * time.Millisecond}
	b.Lat = []time.Duration{2 * time.Millisecond, 4 * time.Millisecond}
	a.Refusals["429"] = 2
	b.Refusals["429"] = 1
	b.Errors["500"] = 5
	r := Summarize("x", "u", 2, 2*time.Second, []*Tally{a, b})
	if r.OK != 4 || r.Throughput != 2 {
		t.Errorf("got ok %d, %v/s, want 4, 2/s", r.OK, r.Throughput)
	}
	if r.P50 != Millis(2*time.Millisecond) || r.Max != Millis(4*time.Millisecond) {
		t.Errorf("got p50 %v max %v, want 2ms 4ms", time.Duration(r.P50), time.Duration(r.Max))
	}
	if r.Refusals["429"] != 3 || r.Errors["500"] != 5 {
		t.Errorf("got refusals %v errors %v, want 429×3 500×5", r.Refusals, r.Errors)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		v      string
		want   time.Duration
		wantOK bool
	}{
		{"seconds", "2", 2 * time.Second, true},
		{"zero", "0", 0, true},
		{"http date", now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second, true},
		{"date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"absent", "", 0, false},
		{"negative", "-1", 0, false},
		{"garbage", "soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.v, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %v %v, want %v %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestRetryAfterHonoured: a server that refuses the first requests with 429/503 and
// Retry-After, then answers 200. The refusals are counted apart from errors, the worker
// waits the delay before retrying, and refusals without Retry-After or other statuses
// are errors by status.
func TestRetryAfterHonoured(t *testing.T) {
	var n atomic.Int64
	var firstRetry atomic.Int64 // unix nanos of the request after the first refusal
	var refusedAt atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch i := n.Add(1); i {
		case 1:
			refusedAt.Store(time.Now().UnixNano())
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			firstRetry.Store(time.Now().UnixNano())
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 3:
			w.WriteHeader(http.StatusServiceUnavailable) // no Retry-After: an error
		case 4:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()

	p := Phase{Name: "t", URL: srv.URL + "/token", Workers: 1, Duration: 10 * time.Second, Requests: 8, MaxWait: 5 * time.Second, Timeout: 5 * time.Second}
	r := TokenPhase(t.Context(), srv.Client(), p, []Device{{ID: "d1", Secret: "s"}}, "tokensvc")

	if r.OK != 4 {
		t.Errorf("got ok %d, want 4", r.OK)
	}
	if r.Refusals["429"] != 1 || r.Refusals["503"] != 1 || len(r.Refusals) != 2 {
		t.Errorf("got refusals %v, want 429×1 503×1", r.Refusals)
	}
	if r.Errors["503 without Retry-After"] != 1 || r.Errors["500"] != 1 || len(r.Errors) != 2 {
		t.Errorf("got errors %v, want 503 without Retry-After×1 500×1", r.Errors)
	}
	if waited := time.Duration(firstRetry.Load() - refusedAt.Load()); waited < time.Second {
		t.Errorf("got retry %v after a Retry-After: 1, want ≥ 1s", waited)
	}
}

// TestTokenPhaseStopsAtDuration: a duration-bounded phase stops by itself.
func TestTokenPhaseStopsAtDuration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	p := Phase{Name: "t", URL: srv.URL, Workers: 4, Duration: 200 * time.Millisecond, MaxWait: time.Second, Timeout: time.Second}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r := TokenPhase(ctx, srv.Client(), p, []Device{{ID: "a", Secret: "s"}, {ID: "b", Secret: "t"}}, "aud")
	if r.Interrupted || r.OK == 0 || len(r.Errors) != 0 {
		t.Errorf("got interrupted %v ok %d errors %v, want a clean phase", r.Interrupted, r.OK, r.Errors)
	}
}

// TestSignerMakesValidUniqueAssertions checks the hand-built HS256 against golang-jwt.
func TestSignerMakesValidUniqueAssertions(t *testing.T) {
	s := NewSigner("tokensvc", "w0-")
	d := Device{ID: "dev-1", Secret: "c2VjcmV0IHRleHQ"}
	now := time.Now()
	seen := map[string]bool{}
	for range 3 {
		raw := s.Sign(d, now)
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return []byte(d.Secret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("tokensvc"), jwt.WithIssuer("dev-1"), jwt.WithSubject("dev-1"), jwt.WithIssuedAt())
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		jti, _ := claims["jti"].(string)
		if jti == "" || seen[jti] {
			t.Fatalf("got jti %q, want a new one each time", jti)
		}
		seen[jti] = true
	}
}

func TestReadDevices(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Device
		wantErr bool
	}{
		{"import report", `{"line":1,"deviceId":"a","result":"created","primaryKey":"k","auth":{"type":"hs256","secret":"s1"}}
{"line":2,"deviceId":"b","result":"rejected","reason":"x"}
{"result":"summary","summary":{"created":1}}
`, []Device{{"a", "s1"}}, false},
		{"plain ndjson", `{"deviceId":"a","secret":"s1"}` + "\n" + `{"deviceId":"b","secret":"s2"}`, []Device{{"a", "s1"}, {"b", "s2"}}, false},
		{"csv", "hub,deviceId,secret\nh,a,s1\nh,b,s2\n", []Device{{"a", "s1"}, {"b", "s2"}}, false},
		{"csv without secret column", "deviceId,hub\na,h\n", nil, true},
		{"empty", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadDevices(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got err %v, wantErr %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("got %v, want %v", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestBaselineBodySize(t *testing.T) {
	for _, n := range []int{0, 5, 8, 2551} {
		if got := len(BaselineBody(n)); got != n {
			t.Errorf("got %d bytes, want %d", got, n)
		}
	}
}

// TestBaselineAnswersLikeATokenResponse: the baseline's response carries the body size
// and the headers tokensvc's token response carries, so the two differ in work only.
func TestBaselineAnswersLikeATokenResponse(t *testing.T) {
	base, stop, err := StartBaseline("127.0.0.1:0", 2551, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get(base + "/token")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || len(body) != 2551 || resp.ContentLength != 2551 || len(resp.TransferEncoding) != 0 ||
		resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("got %d, %d bytes, Content-Length %d, Transfer-Encoding %v, headers %v", resp.StatusCode, len(body), resp.ContentLength, resp.TransferEncoding, resp.Header)
	}
}

// TestFetchAnswers: the probe returns the body of a 200 and the scrape the counters it
// names; any other status is an error naming the request, the status and the answer.
func TestFetchAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			io.WriteString(w, "a token")
		case "/metrics":
			io.WriteString(w, "# HELP x\nreads_total 7\nother 1\n")
		default:
			http.Error(w, "no such thing", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	if b, err := Probe(t.Context(), srv.Client(), srv.URL+"/token", "a"); err != nil || string(b) != "a token" {
		t.Errorf("probe: got %q, %v", b, err)
	}
	if m, err := ScrapeCounters(t.Context(), srv.Client(), srv.URL+"/metrics", []string{"reads_total"}); err != nil || len(m) != 1 || m["reads_total"] != 7 {
		t.Errorf("scrape: got %v, %v", m, err)
	}
	if _, err := Probe(t.Context(), srv.Client(), srv.URL+"/nothing", "a"); err == nil || err.Error() != "probe GET /token: status 404: no such thing\n" {
		t.Errorf("probe of a 404: got %v", err)
	}
	_, err := ScrapeCounters(t.Context(), srv.Client(), srv.URL+"/nothing", nil)
	if want := "scrape " + srv.URL + "/nothing: status 404"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("scrape of a 404: got %v, want %q…", err, want)
	}
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
		if got := TransportClass(tt.err); got != tt.want {
			t.Errorf("%v: got %q, want %q", tt.err, got, tt.want)
		}
	}
}
