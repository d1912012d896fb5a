// Package keeper gets a token at boot and keeps a valid one: it reuses the persisted
// token after a reboot while it is still valid, fetches with exponential backoff and
// jitter (honouring Retry-After) when it has none or the service is down, refreshes at
// the service's refreshAfter (made a little earlier at random, so a fleet that booted
// together does not refresh together), persists every new token and hands it on.
package keeper

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Fetcher gets a new token; *fetch.Client implements it. Errors wrapping *fetch.Error
// may carry a Retry-After.
type Fetcher interface {
	Fetch(ctx context.Context) (token.Token, error)
}

// Store persists the last good token; *persist.File implements it. Load returns
// persist.ErrNone when there is none.
type Store interface {
	Load() (token.Token, error)
	Save(token.Token) error
}

// Options configure a Keeper.
type Options struct {
	Fetcher Fetcher
	// Store is where the last good token is kept; nil keeps it in memory only.
	Store Store
	// Holder receives every new token.
	Holder *token.Holder
	// Key is what tokens are asked for; a persisted token with another key is ignored.
	Key string
	// Backoff is the retry policy for failed fetches.
	Backoff backoff.Policy
	// BootSplay delays the first fetch at boot by a random share of it when no valid
	// token was persisted, so a fleet powering up together arrives spread out.
	BootSplay time.Duration
	// EarlyRefresh moves each refresh earlier than refreshAfter by a random share of
	// this fraction of the lifetime (default 0.05: between 75 % and 80 %).
	EarlyRefresh float64
	// Now is the device clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Stats count what a Keeper did.
type Stats struct {
	// Fetched counts tokens received (the first one and every refresh).
	Fetched int
	// Failed counts failed fetches.
	Failed int
	// Reused is 1 when a persisted token was reused at boot.
	Reused int
	// Invalidated counts tokens a link reported as refused.
	Invalidated int
}

// Keeper keeps a valid token in its Holder.
type Keeper struct {
	o          Options
	log        *slog.Logger
	invalidate chan struct{}

	stats counter.Set[Stats]
}

// New returns a Keeper for o.
func New(o Options) *Keeper {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.EarlyRefresh == 0 {
		o.EarlyRefresh = 0.05
	}
	if o.Backoff.Min <= 0 {
		o.Backoff.Min = time.Second
	}
	if o.Backoff.Max < o.Backoff.Min {
		o.Backoff.Max = max(5*time.Minute, o.Backoff.Min)
	}
	return &Keeper{o: o, log: o.Logger, invalidate: make(chan struct{}, 1)}
}

// Stats returns a snapshot of the counters.
func (k *Keeper) Stats() Stats { return k.stats.Snapshot() }

// Invalidate reports that a peer refused the current token (revoked, keys rotated):
// the Keeper fetches a new one soon, but never faster than its backoff allows.
func (k *Keeper) Invalidate() {
	select {
	case k.invalidate <- struct{}{}:
	default:
	}
}

// Run keeps the token fresh until ctx ends; it returns nil then.
func (k *Keeper) Run(ctx context.Context) error {
	now := k.o.Now()
	next := k.boot(now)
	var (
		failures    int  // consecutive failed fetches
		invalidated int  // consecutive invalidations
		refetch     bool // the pending fetch is for an invalidation
		degenerate  int  // consecutive tokens due for refresh on arrival
		lastFetch   time.Time
	)
	timer := time.NewTimer(max(0, next.Sub(now)))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.invalidate:
			k.stats.Update(func(s *Stats) { s.Invalidated++ })
			if failures > 0 {
				continue // already retrying on a schedule
			}
			invalidated++
			refetch = true
			at := lastFetch.Add(k.o.Backoff.Delay(invalidated, 0))
			k.log.Warn("token refused by a peer; fetching a new one", "in", max(0, at.Sub(k.o.Now())).Round(time.Millisecond).String())
			timer.Reset(max(0, at.Sub(k.o.Now())))
			continue
		case <-timer.C:
		}

		t, err := k.o.Fetcher.Fetch(ctx)
		now = k.o.Now()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			k.stats.Update(func(s *Stats) { s.Failed++ })
			var fe *fetch.Error
			var ra time.Duration
			if errors.As(err, &fe) {
				ra = fe.RetryAfter
			}
			d := k.o.Backoff.Delay(failures, ra)
			attrs := []any{"error", err.Error(), "attempt", failures, "retryIn", d.Round(time.Millisecond).String()}
			if cur, _, ok := k.o.Holder.Current(); ok {
				attrs = append(attrs, "currentTokenValidFor", max(0, cur.Remaining(now)).Round(time.Second).String())
			}
			k.log.Warn("token fetch failed", attrs...)
			timer.Reset(d)
			continue
		}
		if failures > 0 {
			k.log.Info("token service reachable again", "failedAttempts", failures)
		}
		failures, lastFetch = 0, now
		k.o.Holder.Set(t)
		k.stats.Update(func(s *Stats) { s.Fetched++ })
		if k.o.Store != nil {
			if err := k.o.Store.Save(t); err != nil {
				k.log.Error("persist token failed", "error", err.Error())
			}
		}
		at := k.refreshAt(t)
		k.log.Info("token fetched",
			"hub", t.Response.Hub,
			"expiresIn", t.Lifetime().String(),
			"refreshIn", at.Sub(now).Round(time.Millisecond).String())
		if !at.After(now.Add(k.o.Backoff.Min / 2)) {
			// A token due for refresh at once (refreshAfter at serverTime, a lifetime of
			// moments): use it, but pace the refreshes it asks for like failures, so a
			// service answering so again and again is not asked twice a second forever.
			degenerate++
			at = now.Add(k.o.Backoff.Delay(degenerate, 0))
		} else {
			degenerate = 0
		}
		// A scheduled refresh ends a run of invalidations; the refetch an invalidation
		// asked for does not (its token may be refused too: the next refetch then waits
		// longer).
		if !refetch {
			invalidated = 0
		}
		refetch = false
		timer.Reset(at.Sub(now))
	}
}

// boot installs a persisted token that is still valid and returns when to fetch first.
func (k *Keeper) boot(now time.Time) time.Time {
	first := now.Add(k.o.Backoff.Jitter(k.o.BootSplay))
	if k.o.Store == nil {
		return first
	}
	t, err := k.o.Store.Load()
	switch {
	case errors.Is(err, persist.ErrNone):
		return first
	case err != nil:
		k.log.Warn("saved token unusable", "error", err.Error())
		return first
	case t.Key != k.o.Key:
		k.log.Info("saved token was fetched for another configuration; not reused")
		return first
	case t.RequestedAt.After(now):
		// The clock went backwards (no RTC, not yet synced): the token's age is
		// unknowable. Offer it — a peer refuses it if it has expired — and fetch now.
		k.o.Holder.Set(t)
		k.stats.Update(func(s *Stats) { s.Reused++ })
		k.log.Warn("device clock is behind the saved token; reusing it unverified and fetching a new one")
		return now
	case t.Remaining(now) <= 0:
		k.log.Info("saved token has expired")
		return first
	}
	k.o.Holder.Set(t)
	k.stats.Update(func(s *Stats) { s.Reused++ })
	at := k.refreshAt(t)
	k.log.Info("reusing saved token", "validFor", t.Remaining(now).Round(time.Second).String(),
		"refreshIn", max(0, at.Sub(now)).Round(time.Second).String())
	return at
}

// refreshAt is the service's refreshAfter moved earlier by a random share of
// EarlyRefresh × lifetime.
func (k *Keeper) refreshAt(t token.Token) time.Time {
	early := k.o.Backoff.Jitter(time.Duration(k.o.EarlyRefresh * float64(t.Lifetime())))
	return t.RefreshAt().Add(-early)
}

// Current returns the Holder's token; with Invalidate it makes the Keeper the token
// source links use.
func (k *Keeper) Current() (token.Token, <-chan struct{}, bool) {
	return k.o.Holder.Current()
}
