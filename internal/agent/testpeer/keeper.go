package testpeer

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Keeper runs a keeper for the fixture's device, fetching tokens for transport ("" for
// the default) from the service with quick retries, until the test ends.
func (f *Fixture) Keeper(tb testing.TB, transport string) *keeper.Keeper {
	tb.Helper()
	fc := f.fetcher(tb, transport, 5*time.Second)
	k := keeper.New(keeper.Options{Fetcher: fc, Holder: &token.Holder{}, Key: fc.Key(),
		Backoff: backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return k
}
