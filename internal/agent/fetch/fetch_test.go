package fetch_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// TestFetch runs against the real service: success, a device clock that is an hour off
// (corrected from the Date header of the 401), a wrong secret, 503 with Retry-After and
// an unreachable service.
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
		wantOffset time.Duration // approximate
	}{
		{name: "ok", signer: good},
		{name: "device clock an hour ahead", signer: good, skew: time.Hour, wantOffset: -time.Hour},
		{name: "device clock at the MicroPython epoch", signer: good, skew: -time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)), wantOffset: time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))},
		{name: "wrong secret", signer: wrong, wantClass: fetch.ErrRefused, wantStatus: 401},
		// The real service's answer to an unreachable key store: 503, Retry-After 2.
		{name: "key store down", signer: good, setup: func() { f.Service.SetUnavailable(true) }, wantClass: fetch.ErrUnavailable, wantStatus: 503, wantRetry: 2 * time.Second},
		{name: "service down", signer: good, setup: f.Service.Down, wantClass: fetch.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			c, err := fetch.New(fetch.Options{
				ServiceURL: f.Service.URL, DeviceID: f.DeviceID, Audience: testpeer.Audience, Signer: tt.signer,
				HTTPClient: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool()}}},
				Now:        func() time.Time { return time.Now().Add(tt.skew) },
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Fetch(context.Background())
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
				t.Fatalf("got %v, want a token", err)
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
