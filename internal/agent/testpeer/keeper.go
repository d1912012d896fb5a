package testpeer

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Keeper runs a keeper for the fixture's device, fetching tokens for transport ("" for
// the default) from the service with quick retries, until the test ends.
func (f *Fixture) Keeper(tb testing.TB, transport string) *keeper.Keeper {
	tb.Helper()
	cred, err := credential.Load(f.SecretFile, credential.HS256)
	if err != nil {
		tb.Fatal(err)
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool()}}}
	fc, err := fetch.New(fetch.Options{ServiceURL: f.Service.URL, HTTPClient: hc, DeviceID: f.DeviceID,
		Audience: Audience, Transport: transport, Signer: cred, Logger: discard})
	if err != nil {
		tb.Fatal(err)
	}
	k := keeper.New(keeper.Options{Fetcher: fc, Holder: &token.Holder{}, Key: fc.Key(),
		Backoff: backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second}, Logger: discard})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return k
}
