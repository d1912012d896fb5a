package fetch_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// recorder is a Signer that notes which kind of assertion each request carried.
type recorder struct {
	fetch.Signer
	mu   sync.Mutex
	flow []string
}

func (r *recorder) note(kind string) {
	r.mu.Lock()
	r.flow = append(r.flow, kind)
	r.mu.Unlock()
}

func (r *recorder) Assertion(deviceID, audience string, now time.Time) (string, error) {
	r.note("time")
	return r.Signer.Assertion(deviceID, audience, now)
}

func (r *recorder) NonceAssertion(deviceID, audience, nonce string) (string, error) {
	r.note("nonce")
	return r.Signer.NonceAssertion(deviceID, audience, nonce)
}

// TestFetch runs against the real service, fetching twice: success, a device clock
// that is an hour off (the 401 is retried with a nonce, or with the clock corrected
// from the Date header when nonces are off), a clock that was never set (a nonce from
// the start, then the corrected clock), a wrong secret, 503 with Retry-After and an
// unreachable service. wantFlow lists the assertions sent, in order.
func TestFetch(t *testing.T) {
	f := testpeer.NewFixture(t, "valve-7", time.Hour, domain.Hub{})
	good, err := credential.Load(f.SecretFile, credential.Auto)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := credential.Parse([]byte("not-the-device-secret-at-all"), credential.HS256)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		signer     fetch.Signer
		skew       time.Duration
		setup      func()
		wantClass  error
		wantStatus int
		wantRetry  time.Duration
		nonce      fetch.NonceMode
		wantOffset time.Duration // approximate
		wantFlow   []string
	}{
		{name: "ok", signer: good, wantFlow: []string{"time", "time"}},
		{name: "device clock an hour ahead", signer: good, skew: time.Hour, wantOffset: -time.Hour,
			wantFlow: []string{"time", "nonce", "time"}},
		{name: "device clock an hour ahead, nonces off", signer: good, skew: time.Hour, nonce: fetch.NonceNever, wantOffset: -time.Hour,
			wantFlow: []string{"time", "time", "time"}},
		{name: "device clock an hour behind", signer: good, skew: -time.Hour, wantOffset: time.Hour,
			wantFlow: []string{"time", "nonce", "time"}},
		{name: "device clock at the MicroPython epoch", signer: good, skew: -time.Since(epoch2000), wantOffset: time.Since(epoch2000),
			wantFlow: []string{"nonce", "time"}},
		{name: "device clock at the Unix epoch", signer: good, skew: -time.Since(time.Unix(0, 0)), wantOffset: time.Since(time.Unix(0, 0)),
			wantFlow: []string{"nonce", "time"}},
		{name: "nonces always", signer: good, nonce: fetch.NonceAlways, wantFlow: []string{"nonce", "nonce"}},
		{name: "wrong secret", signer: wrong, wantClass: fetch.ErrRefused, wantStatus: 401, wantFlow: []string{"time"}},
		{name: "wrong secret, clock not set", signer: wrong, skew: -time.Since(epoch2000), wantClass: fetch.ErrRefused, wantStatus: 401,
			wantFlow: []string{"nonce"}},
		// The real service's answer to an unreachable key store: 503, Retry-After 2.
		{name: "key store down", signer: good, setup: func() { f.Service.SetUnavailable(true) }, wantClass: fetch.ErrUnavailable, wantStatus: 503, wantRetry: 2 * time.Second,
			wantFlow: []string{"time"}},
		{name: "service down", signer: good, setup: f.Service.Down, wantClass: fetch.ErrUnavailable, wantFlow: []string{"time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			rec := &recorder{Signer: tt.signer}
			c, err := fetch.New(fetch.Options{
				ServiceURL: f.Service.URL, DeviceID: f.DeviceID, Audience: testpeer.Audience, Signer: rec, Nonce: tt.nonce,
				HTTPClient: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool()}}},
				Now:        func() time.Time { return time.Now().Add(tt.skew) },
				// Built two hours ago: the service's certificate was valid then (a clock
				// before the floor has the certificate checked as of the floor).
				ClockFloor: time.Now().Add(-2 * time.Hour),
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Fetch(t.Context())
			if err == nil {
				_, err = c.Fetch(t.Context()) // with what the first fetch learned
			}
			if !slices.Equal(rec.flow, tt.wantFlow) {
				t.Errorf("assertions: got %q, want %q", rec.flow, tt.wantFlow)
			}
			if tt.wantClass != nil {
				var fe *fetch.Error
				if !errors.Is(err, tt.wantClass) || !errors.As(err, &fe) {
					t.Fatalf("got %v, want %v", err, tt.wantClass)
				}
				if fe.Status != tt.wantStatus || fe.RetryAfter != tt.wantRetry {
					t.Errorf("got status %d retry-after %v, want %d %v", fe.Status, fe.RetryAfter, tt.wantStatus, tt.wantRetry)
				}
				return
			}
			if err != nil {
				t.Fatalf("second fetch: got %v, want a token", err)
			}
			if _, err := signer.Verify(tok.Response.Token, f.Key, time.Now()); err != nil {
				t.Errorf("token does not verify: %v", err)
			}
			if d := c.Offset() - tt.wantOffset; d > 3*time.Second || d < -3*time.Second {
				t.Errorf("offset: got %v, want about %v", c.Offset(), tt.wantOffset)
			}
			// Lifetimes are measured on the device's clock, whatever its absolute error.
			if got := tok.Remaining(time.Now().Add(tt.skew)); got < time.Hour-5*time.Second || got > time.Hour {
				t.Errorf("remaining on the device clock: got %v, want about 1h", got)
			}
			if tok.Key != c.Key() {
				t.Errorf("token key: got %q, want %q", tok.Key, c.Key())
			}
		})
	}
}

var epoch2000 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// TestFetchWithoutNonceEndpoint: a tokensvc older than the nonce flow answers 404; a
// device whose clock is not set then stays with time-based assertions.
func TestFetchWithoutNonceEndpoint(t *testing.T) {
	good, err := credential.Parse([]byte("s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123456789"), credential.HS256)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" {
			http.NotFound(w, r)
			return
		}
		now := time.Now().UTC()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":"SharedAccessSignature sr=x","hub":"h","deviceId":"d","serverTime":%q,"expiresAt":%q,"refreshAfter":%q}`,
			now.Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339), now.Add(48*time.Minute).Format(time.RFC3339))
	}))
	t.Cleanup(srv.Close)
	rec := &recorder{Signer: good}
	c, err := fetch.New(fetch.Options{ServiceURL: srv.URL, DeviceID: "d", Audience: testpeer.Audience, Signer: rec,
		ClockFloor: time.Now().Add(time.Hour), Now: func() time.Time { return time.Now().Add(-time.Since(epoch2000)) },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Fetch(t.Context()); err != nil {
			t.Fatalf("got %v, want a token", err)
		}
	}
	if want := []string{"time", "time"}; !slices.Equal(rec.flow, want) {
		t.Errorf("assertions: got %q, want %q", rec.flow, want)
	}

	// An operator who asked for nonces always gets the failure, not a silent fallback.
	always, err := fetch.New(fetch.Options{ServiceURL: srv.URL, DeviceID: "d", Audience: testpeer.Audience, Signer: good,
		Nonce: fetch.NonceAlways, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = always.Fetch(t.Context())
	var fe *fetch.Error
	if !errors.As(err, &fe) || fe.Status != http.StatusNotFound {
		t.Fatalf("nonce always: got %v, want the service's 404 for POST /token/nonce", err)
	}
}
