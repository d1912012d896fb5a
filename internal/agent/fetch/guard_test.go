package fetch_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
)

// TestHugeAnswerIsRefused: whatever answers at the service URL cannot make the agent
// read an unbounded body into memory: a 200 whose (well-formed) token is larger than
// fetch.MaxResponseBytes fails as ErrUnavailable, and a body just under the limit is
// still read.
func TestHugeAnswerIsRefused(t *testing.T) {
	cred, err := credential.Parse([]byte("a-device-secret-of-some-length"), credential.HS256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int
		ok   bool
	}{
		{"under the limit", fetch.MaxResponseBytes - 1024, true},
		{"twice the limit", 2 * fetch.MaxResponseBytes, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				now := time.Now().UTC()
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"token":"%s","expiresAt":%q,"refreshAfter":%q,"serverTime":%q,"expiresIn":3600,"hub":"h","kind":"iothub","resource":"r"}`,
					strings.Repeat("a", tc.size), now.Add(time.Hour).Format(time.RFC3339), now.Add(48*time.Minute).Format(time.RFC3339), now.Format(time.RFC3339))
			}))
			defer srv.Close()
			c, err := fetch.New(fetch.Options{ServiceURL: srv.URL, DeviceID: "d", Audience: "tokensvc", Signer: cred, Nonce: fetch.NonceNever})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Fetch(t.Context())
			if tc.ok {
				if err != nil || len(tok.Response.Token) != tc.size {
					t.Fatalf("got %d bytes of token, %v; want the token", len(tok.Response.Token), err)
				}
				return
			}
			if !errors.Is(err, fetch.ErrUnavailable) {
				t.Fatalf("got %d bytes of token, %v; want ErrUnavailable", len(tok.Response.Token), err)
			}
		})
	}
}

// TestRedirectToPlainHTTPIsNotFollowed: a service URL (or a proxy in front of it) that
// redirects to http:// must not get the device's assertion sent in clear text, where
// anyone on the path could use it to get the device's token before it expires; the
// fetch fails instead.
func TestRedirectToPlainHTTPIsNotFollowed(t *testing.T) {
	cred, err := credential.Parse([]byte("a-device-secret-of-some-length"), credential.HS256)
	if err != nil {
		t.Fatal(err)
	}
	var leaked atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer tlsSrv.Close()
	c, err := fetch.New(fetch.Options{ServiceURL: tlsSrv.URL, HTTPClient: tlsSrv.Client(), DeviceID: "d", Audience: "tokensvc",
		Signer: cred, Nonce: fetch.NonceNever})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(t.Context()); err == nil {
		t.Fatal("fetch succeeded, want an error")
	}
	if _, _, err := c.Certificate(t.Context(), "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"); err == nil {
		t.Fatal("certificate request succeeded, want an error")
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d assertions sent over plain HTTP after a redirect", n)
	}
}

// TestServiceVerifiedOnAnUnsetClock: on a board without an RTC (its clock at the Unix
// epoch, which the TLS stack reads too) the service's certificate is checked as of the
// agent's clock floor (the build time; here an hour ago) instead of 1970, when no
// certificate is valid yet, so the nonce flow meant for such a board can get the
// first token; after it the check uses the clock corrected by the service's time.
func TestServiceVerifiedOnAnUnsetClock(t *testing.T) {
	f := testpeer.NewFixture(t, "valve-8", time.Hour, domain.Hub{})
	cred, err := credential.Load(f.SecretFile, credential.Auto)
	if err != nil {
		t.Fatal(err)
	}
	epoch := func() time.Time { return time.Unix(0, 0).Add(time.Since(start)) }
	c, err := fetch.New(fetch.Options{
		ServiceURL: f.Service.URL, DeviceID: f.DeviceID, Audience: testpeer.Audience, Signer: cred,
		HTTPClient: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool(), Time: epoch}}}, // the system clock
		Now:        epoch,
		ClockFloor: time.Now().Add(-time.Hour),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := c.Fetch(t.Context()); err != nil {
			t.Fatalf("fetch %d: %v", i+1, err)
		}
	}
}

var start = time.Now()
