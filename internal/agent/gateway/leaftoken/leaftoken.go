// Package leaftoken keeps a valid token for every leaf of a gateway with POST
// /token/batch: one call for many leaves, never one HTTPS round trip per leaf. Each
// leaf's next refresh is drawn at random between Early and Late of its token's lifetime,
// so leaves fetched together at boot spread out over the lifetime at the next refresh
// (no herd); leaves that fall due close together share a call.
package leaftoken

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Batcher fetches children's tokens in one call; *fetch.Client implements it.
type Batcher interface {
	Batch(ctx context.Context, ids []string) ([]fetch.BatchResult, error)
}

var _ Batcher = (*fetch.Client)(nil)

// Options configure a Keeper.
type Options struct {
	Batcher Batcher
	// Leaves are the leaf device IDs.
	Leaves []string
	// Early and Late bound when a token is refreshed, as fractions of its lifetime
	// (default 0.5 and 0.8: the service's refreshAfter).
	Early, Late float64
	// Coalesce is how far ahead of its time a leaf is refreshed to share a call with
	// one that is due (default 1 min, never more than 5 % of the token's lifetime).
	Coalesce time.Duration
	// BatchSize is the most leaves per call (default and maximum fetch.MaxBatch).
	BatchSize int
	// Backoff paces retries after a failed call or a refused leaf.
	Backoff backoff.Policy
	// Trim, when set, drops from each token what the upstream does not use before it
	// is kept (a thousand leaves' unused profiles are ~2 MiB).
	Trim func(token.Token) token.Token
	// OnToken, when set, is called with each leaf that got a new token (after its
	// Source has it; from Run, so it must not block).
	OnToken func(leaf string)
	Rand    func() float64
	Now     func() time.Time
	Logger  *slog.Logger
}

// Stats count what a Keeper did.
type Stats struct {
	// Calls counts batch calls made; CallsFailed those that failed as a whole;
	// Fetched the tokens received; LeafErrors the leaves the service refused or
	// answered without a token; Invalidated the tokens a hub refused.
	Calls, CallsFailed, Fetched, LeafErrors, Invalidated int
}

type leaf struct {
	holder   token.Holder
	due      time.Time
	lifetime time.Duration
	fetched  time.Time
	failures int
	// refused counts the hub's refusals in a row; invalidated says the pending fetch
	// is for one.
	refused     int
	invalidated bool
}

// Keeper keeps every leaf's token.
type Keeper struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	leaves map[string]*leaf
	wake   chan struct{}

	stats counter.Set[Stats]
}

// New returns a Keeper for o; every leaf is due at once.
func New(o Options) *Keeper {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Early <= 0 || o.Late <= o.Early || o.Late >= 1 {
		o.Early, o.Late = 0.5, 0.8
	}
	if o.Coalesce <= 0 {
		o.Coalesce = time.Minute
	}
	if o.BatchSize <= 0 || o.BatchSize > fetch.MaxBatch {
		o.BatchSize = fetch.MaxBatch
	}
	if o.Backoff.Min <= 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: 5 * time.Minute}
	}
	k := &Keeper{o: o, log: o.Logger, leaves: make(map[string]*leaf, len(o.Leaves)), wake: make(chan struct{}, 1)}
	now := o.Now()
	for _, id := range o.Leaves {
		k.leaves[id] = &leaf{due: now}
	}
	return k
}

// Stats returns a snapshot of the counters.
func (k *Keeper) Stats() Stats { return k.stats.Snapshot() }

// Source returns leaf id's token source for its upstream link, or nil for an unknown
// leaf.
func (k *Keeper) Source(id string) link.TokenSource {
	if _, ok := k.leaves[id]; !ok {
		return nil
	}
	return source{k: k, id: id}
}

type source struct {
	k  *Keeper
	id string
}

func (s source) Current() (token.Token, <-chan struct{}, bool) {
	return s.k.leaves[s.id].holder.Current()
}

// Invalidate refetches the leaf's token soon, never faster than the backoff allows.
func (s source) Invalidate() {
	k := s.k
	k.mu.Lock()
	l := k.leaves[s.id]
	l.refused++
	l.invalidated = true
	due := l.fetched.Add(k.o.Backoff.Delay(l.refused, 0))
	if due.Before(l.due) {
		l.due = due
	}
	k.mu.Unlock()
	k.stats.Update(func(st *Stats) { st.Invalidated++ })
	k.log.Warn("leaf token refused by the hub; fetching a new one", "leaf", s.id)
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// Run fetches and refreshes until ctx ends; it returns nil then.
func (k *Keeper) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-k.wake:
		}
		// Failed leaves fall due later, so this ends.
		for ids := k.dueNow(); len(ids) > 0 && ctx.Err() == nil; ids = k.dueNow() {
			for len(ids) > 0 && ctx.Err() == nil {
				n := min(len(ids), k.o.BatchSize)
				k.fetch(ctx, ids[:n])
				ids = ids[n:]
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		k.mu.Lock()
		next := k.nextDue()
		k.mu.Unlock()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(0, next.Sub(k.o.Now())))
	}
}

// dueNow returns the leaves to fetch now, soonest first: none unless one is due, then
// also those due within the coalescing window.
func (k *Keeper) dueNow() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.o.Now()
	if !k.anyDue(now) {
		return nil
	}
	var ids []string
	for id, l := range k.leaves {
		window := k.o.Coalesce // a leaf without a token yet
		if l.lifetime > 0 {
			window = min(window, l.lifetime/20)
		}
		if !l.due.After(now.Add(window)) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int { return k.leaves[a].due.Compare(k.leaves[b].due) })
	return ids
}

func (k *Keeper) anyDue(now time.Time) bool {
	for _, l := range k.leaves {
		if !l.due.After(now) {
			return true
		}
	}
	return false
}

func (k *Keeper) nextDue() time.Time {
	var next time.Time
	for _, l := range k.leaves {
		if next.IsZero() || l.due.Before(next) {
			next = l.due
		}
	}
	if next.IsZero() {
		next = k.o.Now().Add(time.Hour)
	}
	return next
}

// fetch makes one batch call for ids and schedules each leaf's next fetch.
func (k *Keeper) fetch(ctx context.Context, ids []string) {
	k.stats.Update(func(s *Stats) { s.Calls++ })
	results, err := k.o.Batcher.Batch(ctx, ids)
	now := k.o.Now()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		var fe *fetch.Error
		var ra time.Duration
		if errors.As(err, &fe) {
			ra = fe.RetryAfter
		}
		k.stats.Update(func(s *Stats) { s.CallsFailed++ })
		// The call's leaves retry together, in one call again: one delay for all (the
		// backoff of the leaf that failed most), not a jittered timer each, which would
		// split the call into as many calls as leaves.
		k.mu.Lock()
		attempt := 0
		for _, id := range ids {
			l := k.leaves[id]
			l.failures++
			attempt = max(attempt, l.failures)
		}
		d := k.o.Backoff.Delay(attempt, ra)
		for _, id := range ids {
			k.leaves[id].due = now.Add(d)
		}
		k.mu.Unlock()
		k.log.Warn("leaf token batch failed", "error", err.Error(), "leaves", len(ids), "retryIn", d.Round(time.Millisecond).String())
		return
	}
	var fetched, failed int
	var got []string
	k.mu.Lock()
	for _, r := range results {
		l, ok := k.leaves[r.DeviceID]
		if !ok {
			continue
		}
		if r.Err != nil {
			failed++
			l.failures++
			l.due = now.Add(k.o.Backoff.Delay(l.failures, 0))
			k.log.Warn("leaf token refused by the service", "leaf", r.DeviceID, "error", r.Err.Error())
			continue
		}
		fetched++
		l.failures = 0
		l.lifetime = r.Token.Lifetime()
		l.fetched = now
		if !l.invalidated {
			l.refused = 0 // a scheduled refresh ends a run of refusals
		}
		l.invalidated = false
		if k.o.Trim != nil {
			r.Token = k.o.Trim(r.Token)
		}
		l.holder.Set(r.Token)
		got = append(got, r.DeviceID)
		share := k.o.Early + k.o.Rand()*(k.o.Late-k.o.Early)
		l.due = r.Token.RequestedAt.Add(time.Duration(share * float64(l.lifetime)))
		if min := now.Add(k.o.Backoff.Min / 2); l.due.Before(min) {
			l.due = min // never spin on a degenerate lifetime
		}
	}
	k.mu.Unlock()
	if k.o.OnToken != nil {
		for _, id := range got {
			k.o.OnToken(id)
		}
	}
	k.stats.Update(func(s *Stats) { s.Fetched += fetched; s.LeafErrors += failed })
	k.log.Debug("leaf tokens fetched", "leaves", len(ids), "fetched", fetched, "refused", failed)
}
