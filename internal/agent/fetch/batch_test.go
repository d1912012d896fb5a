package fetch_test

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// TestBatch runs POST /token/batch against the real service as a gateway: each child's
// own token in request order, a stranger's entry refused on its own (403) without
// failing the call, a device clock an hour off corrected from the Date header of the
// 401 and retried once (nonces off), and a batch over the limit refused before any
// request.
func TestBatch(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-batch", []string{"leaf-1", "leaf-2"}, time.Hour)
	cred, err := credential.Load(f.SecretFile, credential.HS256)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool()}}}
	tests := []struct {
		name     string
		skew     time.Duration
		wantFlow []string
	}{
		{name: "clock right", wantFlow: []string{"time"}},
		{name: "clock an hour ahead, nonces off", skew: time.Hour, wantFlow: []string{"time", "time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{Signer: cred}
			c, err := fetch.New(fetch.Options{ServiceURL: f.Service.URL, HTTPClient: hc, DeviceID: f.DeviceID,
				Audience: testpeer.Audience, Signer: rec, Nonce: fetch.NonceNever, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Now: func() time.Time { return time.Now().Add(tt.skew) }})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Batch(t.Context(), []string{"leaf-2", "stranger", "leaf-1"})
			if err != nil {
				t.Fatalf("Batch: %v", err)
			}
			if !slices.Equal(rec.flow, tt.wantFlow) {
				t.Errorf("assertions: got %v, want %v", rec.flow, tt.wantFlow)
			}
			for i, want := range []string{"leaf-2", "stranger", "leaf-1"} {
				if got[i].DeviceID != want {
					t.Fatalf("result %d: got %s, want %s (request order)", i, got[i].DeviceID, want)
				}
			}
			var fe *fetch.Error
			if !errors.As(got[1].Err, &fe) || fe.Status != http.StatusForbidden || !errors.Is(fe, fetch.ErrRefused) {
				t.Errorf("stranger: got %v, want a refused 403", got[1].Err)
			}
			for _, i := range []int{0, 2} {
				r := got[i]
				if r.Err != nil || r.Token.Response.Resource != testpeer.Hub+"/devices/"+r.DeviceID || r.Token.Key != c.BatchKey(r.DeviceID) {
					t.Errorf("%s: err %v resource %q key ok %v", r.DeviceID, r.Err, r.Token.Response.Resource, r.Token.Key == c.BatchKey(r.DeviceID))
				}
				if rem := r.Token.Remaining(time.Now().Add(tt.skew)); rem < time.Hour-5*time.Second || rem > time.Hour {
					t.Errorf("%s: remaining %v on the device clock, want about an hour", r.DeviceID, rem)
				}
			}
		})
	}
	c := f.Fetcher(t)
	_, err = c.Batch(t.Context(), make([]string, fetch.MaxBatch+1))
	if !errors.Is(err, fetch.ErrRefused) {
		t.Errorf("batch of %d: got %v, want ErrRefused", fetch.MaxBatch+1, err)
	}
}
