package keeper_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// fakeFetcher mints tokens of a fixed lifetime on the (synctest) clock, or fails with
// the queued errors first.
type fakeFetcher struct {
	mu       sync.Mutex
	lifetime time.Duration
	fail     []error
	calls    []time.Time
}

func (f *fakeFetcher) Fetch(context.Context) (token.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.calls = append(f.calls, now)
	if len(f.fail) > 0 {
		err := f.fail[0]
		f.fail = f.fail[1:]
		return token.Token{}, err
	}
	return mint(now, f.lifetime), nil
}

func (f *fakeFetcher) Calls() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

func mint(now time.Time, lifetime time.Duration) token.Token {
	st := now.Truncate(time.Second)
	return token.Token{
		Response: oapi.TokenResponse{
			Token:        "SharedAccessSignature sr=x&sig=y&se=1",
			ServerTime:   st,
			ExpiresAt:    st.Add(lifetime),
			RefreshAfter: st.Add(lifetime * 8 / 10),
		},
		RequestedAt: now,
		Key:         "k",
	}
}

type memStore struct {
	mu    sync.Mutex
	t     token.Token
	ok    bool
	saves int
}

func (m *memStore) Load() (token.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ok {
		return token.Token{}, persist.ErrNone
	}
	return m.t, nil
}

func (m *memStore) Save(t token.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t, m.ok = t, true
	m.saves++
	return nil
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// noJitter makes backoff delays their ceiling and refreshes exactly at refreshAfter.
func noJitter() float64 { return 0.999999 }

func start(t *testing.T, o keeper.Options) (*keeper.Keeper, context.CancelFunc) {
	t.Helper()
	if o.Holder == nil {
		o.Holder = &token.Holder{}
	}
	o.Logger = discard()
	o.Key = "k"
	k := keeper.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	go k.Run(ctx)
	return k, cancel
}

func TestRefreshAtRefreshAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{lifetime: time.Hour}
		st := &memStore{}
		k, cancel := start(t, keeper.Options{Fetcher: f, Store: st, EarlyRefresh: 0.05,
			Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0 }}})
		defer cancel()
		t0 := time.Now()
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		calls := f.Calls()
		// Boot, then every 48 min (80 % of an hour; Rand 0 means no early jitter).
		want := []time.Duration{0, 48 * time.Minute, 96 * time.Minute, 144 * time.Minute}
		if len(calls) != len(want) {
			t.Fatalf("fetches: got %d at %v, want %d", len(calls), calls, len(want))
		}
		for i, c := range calls {
			if got := c.Sub(t0); got != want[i] {
				t.Errorf("fetch %d: got +%v, want +%v", i, got, want[i])
			}
		}
		if st.saves != len(want) {
			t.Errorf("saves: got %d, want %d", st.saves, len(want))
		}
		if s := k.Stats(); s.Fetched != 4 || s.Failed != 0 {
			t.Errorf("stats: got %+v", s)
		}
	})
}

func TestEarlyRefreshJitterStaysWithinFivePercent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{lifetime: time.Hour}
		_, cancel := start(t, keeper.Options{Fetcher: f, Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: noJitter}})
		defer cancel()
		t0 := time.Now()
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		calls := f.Calls()
		if len(calls) != 2 {
			t.Fatalf("fetches: got %d, want 2", len(calls))
		}
		// Rand ≈ 1: refreshed ≈ 5 % of the lifetime before 80 %, i.e. at 45 min.
		if got := calls[1].Sub(t0); got < 45*time.Minute || got > 45*time.Minute+time.Second {
			t.Errorf("refresh: got +%v, want +45m (75 %% of the lifetime)", got)
		}
	})
}

func TestBackoffHonoursRetryAfterAndKeepsTheValidToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unavailable := &fetch.Error{Class: fetch.ErrUnavailable, Status: 503, RetryAfter: 30 * time.Second}
		refused := &fetch.Error{Class: fetch.ErrUnavailable, Detail: "connection refused"}
		f := &fakeFetcher{lifetime: time.Hour, fail: []error{refused, refused, refused, unavailable}}
		h := &token.Holder{}
		k, cancel := start(t, keeper.Options{Fetcher: f, Holder: h,
			Backoff: backoff.Policy{Min: time.Second, Max: 8 * time.Second, Rand: noJitter}})
		defer cancel()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		calls := f.Calls()
		if len(calls) != 5 {
			t.Fatalf("fetches: got %d, want 5", len(calls))
		}
		// Delays: ceilings 1, 2, 4 s (full jitter, Rand ≈ 1), then Retry-After 30 s plus up
		// to half of it again (Rand ≈ 1: 45 s) rather than the 8 s ceiling.
		wantGaps := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 45 * time.Second}
		for i, w := range wantGaps {
			if got := calls[i+1].Sub(calls[i]); got < w-time.Millisecond || got > w {
				t.Errorf("gap %d: got %v, want %v", i, got, w)
			}
		}
		if _, _, ok := h.Current(); !ok {
			t.Error("no token after recovery")
		}
		if s := k.Stats(); s.Failed != 4 || s.Fetched != 1 {
			t.Errorf("stats: got %+v, want 4 failed, 1 fetched", s)
		}
	})
}

func TestBootReusesPersistedToken(t *testing.T) {
	tests := []struct {
		name string
		// age of the persisted token at boot; negative: the clock went backwards
		age        time.Duration
		key        string
		wantReused bool
		// wantFirst is when the first fetch happens after boot
		wantFirst time.Duration
	}{
		{"fresh token: reused, refreshed at its refreshAfter", 10 * time.Minute, "k", true, 38 * time.Minute},
		{"past refreshAfter: reused and refreshed at once", 50 * time.Minute, "k", true, 0},
		{"expired: fetched", 61 * time.Minute, "k", false, 0},
		{"other configuration: fetched", 10 * time.Minute, "other", false, 0},
		{"clock went backwards: reused unverified, fetched at once", -time.Hour, "k", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				saved := mint(time.Now().Add(-tt.age), time.Hour)
				saved.Key = tt.key
				st := &memStore{t: saved, ok: true}
				f := &fakeFetcher{lifetime: time.Hour}
				h := &token.Holder{}
				k, cancel := start(t, keeper.Options{Fetcher: f, Store: st, Holder: h,
					Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0 }}})
				defer cancel()
				t0 := time.Now()
				synctest.Wait()
				if got := k.Stats().Reused == 1; got != tt.wantReused {
					t.Errorf("reused: got %v, want %v", got, tt.wantReused)
				}
				time.Sleep(tt.wantFirst + time.Millisecond)
				synctest.Wait()
				calls := f.Calls()
				if len(calls) != 1 {
					t.Fatalf("fetches by +%v: got %d, want 1", tt.wantFirst, len(calls))
				}
				if got := calls[0].Sub(t0); got != tt.wantFirst {
					t.Errorf("first fetch: got +%v, want +%v", got, tt.wantFirst)
				}
			})
		})
	}
}

func TestBootSplaySpreadsTheFirstFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{lifetime: time.Hour}
		_, cancel := start(t, keeper.Options{Fetcher: f, BootSplay: 10 * time.Second,
			Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0.5 }}})
		defer cancel()
		t0 := time.Now()
		time.Sleep(time.Minute)
		synctest.Wait()
		if c := f.Calls(); len(c) == 0 || c[0].Sub(t0) != 5*time.Second {
			t.Errorf("first fetch: got %v, want +5s (half of the 10 s splay)", c)
		}
	})
}

func TestInvalidateFetchesAgainButNotInALoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{lifetime: time.Hour}
		k, cancel := start(t, keeper.Options{Fetcher: f,
			Backoff: backoff.Policy{Min: 2 * time.Second, Max: time.Minute, Rand: noJitter}})
		defer cancel()
		synctest.Wait()
		// A broker refusing every token: each refusal may cost one fetch, paced by backoff.
		for range 5 {
			k.Invalidate()
			time.Sleep(10 * time.Second)
			synctest.Wait()
		}
		calls := f.Calls()
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].Sub(calls[i-1]); gap < time.Second {
				t.Errorf("fetches %d and %d only %v apart", i-1, i, gap)
			}
		}
		if len(calls) < 3 {
			t.Errorf("fetches: got %d, want the invalidations to trigger refetches", len(calls))
		}
		if got := k.Stats().Invalidated; got != 5 {
			t.Errorf("invalidated: got %d, want 5", got)
		}
	})
}

// TestRefusalsInARowBackOff: a peer that refuses every token (the device disabled at
// the hub, the hub's keys rotated) makes the link invalidate each new token as soon as
// it tries it. Each refetch then comes later than the one before, up to the backoff's
// Max — the refetch an invalidation causes does not end the run of refusals, only a
// scheduled refresh does — instead of a fetch and a hub connection every Min, forever.
func TestRefusalsInARowBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{lifetime: time.Hour}
		h := &token.Holder{}
		k, cancel := start(t, keeper.Options{Fetcher: f, Holder: h,
			Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: noJitter}})
		defer cancel()
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go token.Watch(ctx, h, func(token.Token) { k.Invalidate() }) // the refusing peer
		time.Sleep(10 * time.Minute)
		stop()
		synctest.Wait()
		calls := f.Calls()
		// 1, 2, 4, 8, 16, 32 s, then a minute each: about 15 fetches in 10 minutes.
		if len(calls) > 20 {
			t.Errorf("fetches in 10 minutes of refusals: got %d, want the backoff to grow to its 1 min Max", len(calls))
		}
		if n := len(calls); n >= 2 {
			if gap := calls[n-1].Sub(calls[n-2]); gap < 30*time.Second {
				t.Errorf("last gap between fetches: got %v, want about the 1 min Max", gap)
			}
		}
	})
}

// TestRetryAfterIsCapped: a Retry-After far beyond the backoff's Max (a proxy's or a
// misconfigured service's "come back tomorrow") is honoured only up to
// backoff.MaxRetryAfter (plus half of it as jitter), so a device without a token (or
// with one that expires within the day) fetches again within 15 minutes instead of
// sleeping through its expiry.
func TestRetryAfterIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tomorrow := &fetch.Error{Class: fetch.ErrUnavailable, Status: 503, RetryAfter: 24 * time.Hour}
		f := &fakeFetcher{lifetime: time.Hour, fail: []error{tomorrow}}
		h := &token.Holder{}
		_, cancel := start(t, keeper.Options{Fetcher: f, Holder: h,
			Backoff: backoff.Policy{Min: time.Second, Max: 5 * time.Minute, Rand: noJitter}})
		defer cancel()
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		calls := f.Calls()
		if len(calls) < 2 {
			t.Fatalf("fetches in 20 minutes after a 24 h Retry-After: got %d, want a retry within 1.5 × backoff.MaxRetryAfter", len(calls))
		}
		if gap, limit := calls[1].Sub(calls[0]), backoff.MaxRetryAfter*3/2; gap > limit || gap < backoff.MaxRetryAfter {
			t.Errorf("retry after %v, want between backoff.MaxRetryAfter and %v", gap, limit)
		}
		if _, _, ok := h.Current(); !ok {
			t.Error("no token after the retry")
		}
	})
}

// immediateFetcher mints valid tokens whose refreshAfter is their serverTime: the
// service (a bug, a hub misconfigured) asks for a refresh at once, every time.
type immediateFetcher struct{ fakeFetcher }

func (f *immediateFetcher) Fetch(ctx context.Context) (token.Token, error) {
	t, err := f.fakeFetcher.Fetch(ctx)
	t.Response.RefreshAfter = t.Response.ServerTime
	return t, err
}

// TestRefreshDueAtOnceBacksOff: tokens that ask to be refreshed the moment they arrive
// are used, but the refreshes they ask for back off like failures (1, 2, 4 … s up to
// Max) instead of a fetch every Min/2, forever: a fleet must not hammer the service at
// two requests a second per device because of one bad answer pattern.
func TestRefreshDueAtOnceBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &immediateFetcher{fakeFetcher{lifetime: time.Hour}}
		h := &token.Holder{}
		_, cancel := start(t, keeper.Options{Fetcher: f, Holder: h,
			Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: noJitter}})
		defer cancel()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		calls := f.Calls()
		// 0.5 s floors: 1200 fetches; backing off: 1, 2, 4 … 32 s, then a minute each.
		if len(calls) > 20 {
			t.Errorf("fetches in 10 minutes of tokens due at once: got %d, want the backoff to grow to its 1 min Max", len(calls))
		}
		if _, _, ok := h.Current(); !ok {
			t.Error("the tokens were not used")
		}
	})
}
