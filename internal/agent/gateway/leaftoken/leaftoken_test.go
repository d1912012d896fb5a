package leaftoken

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// fakeBatcher answers like POST /token/batch with tokens that live lifetime; it fails
// whole calls while down and refuses the leaves in refuse. A fake: the timing property
// under test needs hours of virtual time.
type fakeBatcher struct {
	lifetime time.Duration
	mu       sync.Mutex
	down     bool
	refuse   map[string]bool
	calls    []int // leaves per call
}

func (f *fakeBatcher) Batch(_ context.Context, ids []string) ([]fetch.BatchResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, &fetch.Error{Class: fetch.ErrUnavailable, Status: 503, RetryAfter: 5 * time.Second}
	}
	f.calls = append(f.calls, len(ids))
	now := time.Now()
	out := make([]fetch.BatchResult, len(ids))
	for i, id := range ids {
		out[i].DeviceID = id
		if f.refuse[id] {
			out[i].Err = &fetch.Error{Class: fetch.ErrRefused, Status: 403, Detail: "no"}
			continue
		}
		out[i].Token = token.Token{RequestedAt: now, Response: oapi.TokenResponse{Token: "t-" + id, ServerTime: now,
			ExpiresAt: now.Add(f.lifetime), RefreshAfter: now.Add(f.lifetime * 8 / 10)}}
	}
	return out, nil
}

func leaves(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("leaf-%04d", i)
	}
	return ids
}

// TestSpreadNoHerd: 1,000 leaves with one-hour tokens for six hours: every leaf holds an
// unexpired token at every minute after boot, boot takes two calls (500 each), and after
// the first lifetime no call carries more than a small share of the leaves — the
// refreshes spread instead of coming back together.
func TestSpreadNoHerd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := &fakeBatcher{lifetime: time.Hour}
		ids := leaves(1000)
		k := New(Options{Batcher: fb, Leaves: ids, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- k.Run(ctx) }()
		synctest.Wait()
		for minute := 1; minute <= 360; minute++ {
			time.Sleep(time.Minute)
			synctest.Wait()
			for _, id := range ids {
				tok, _, ok := k.Source(id).Current()
				if !ok || tok.Remaining(time.Now()) <= 0 {
					t.Fatalf("minute %d: leaf %s has no valid token", minute, id)
				}
			}
		}
		cancel()
		<-done
		fb.mu.Lock()
		defer fb.mu.Unlock()
		if len(fb.calls) < 2 || fb.calls[0] != 500 || fb.calls[1] != 500 {
			t.Fatalf("boot calls: got %v, want two of 500", fb.calls[:min(2, len(fb.calls))])
		}
		biggest, total := 0, 0
		for _, n := range fb.calls[2:] {
			biggest = max(biggest, n)
			total += n
		}
		if biggest > 100 {
			t.Errorf("largest refresh call after boot: got %d leaves, want at most 100 (a herd)", biggest)
		}
		// Six hours of 1-hour tokens refreshed at 50–80 % of their life: about 6/0.65
		// fetches per leaf.
		if perLeaf := float64(total) / 1000; perLeaf < 7 || perLeaf > 12 {
			t.Errorf("refreshes per leaf over six hours: got %.1f, want 7–12", perLeaf)
		}
		t.Logf("%d calls after boot for %d tokens (largest %d); stats %+v", len(fb.calls)-2, total, biggest, k.Stats())
	})
}

// TestFailuresRetried: a failed call and a refused leaf are retried with backoff; the
// hub's refusal (Invalidate) brings a refetch; an unknown leaf has no source.
func TestFailuresRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := &fakeBatcher{lifetime: time.Hour, down: true, refuse: map[string]bool{"leaf-0001": true}}
		k := New(Options{Batcher: fb, Leaves: leaves(3), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go k.Run(ctx)
		time.Sleep(time.Second)
		synctest.Wait()
		if _, _, ok := k.Source("leaf-0000").Current(); ok {
			t.Fatal("token while the service is down")
		}
		fb.mu.Lock()
		fb.down = false
		fb.mu.Unlock()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if _, _, ok := k.Source("leaf-0000").Current(); !ok {
			t.Fatalf("no token 30 s after the service came back: %+v", k.Stats())
		}
		if _, _, ok := k.Source("leaf-0001").Current(); ok {
			t.Fatal("refused leaf has a token")
		}
		before := k.Stats().Fetched
		k.Source("leaf-0002").Invalidate()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if s := k.Stats(); s.Fetched <= before || s.Invalidated != 1 || s.CallsFailed == 0 || s.LeafErrors == 0 {
			t.Errorf("stats: got %+v, want a refetch after the invalidation, failed calls and leaf errors counted", s)
		}
		if k.Source("stranger") != nil {
			t.Error("Source of an unknown leaf: got a source, want nil")
		}
	})
}

// outageBatcher fails every call until up, counting them, then answers like fakeBatcher.
type outageBatcher struct {
	fakeBatcher
	up          time.Time
	failedCalls int
}

func (o *outageBatcher) Batch(ctx context.Context, ids []string) ([]fetch.BatchResult, error) {
	o.mu.Lock()
	down := time.Now().Before(o.up)
	if down {
		o.failedCalls++
	}
	o.mu.Unlock()
	if down {
		return nil, &fetch.Error{Class: fetch.ErrUnavailable, Status: 503, RetryAfter: 5 * time.Second}
	}
	return o.fakeBatcher.Batch(ctx, ids)
}

// TestOutageAtBootRetriesByBatch: the service is down when 1,000 leaves boot. The
// leaves of a failed call retry together, in one call again, not each on its own
// jittered timer (no lifetime is known yet to coalesce them by) — which turned two
// calls into hundreds against a service already answering 503.
func TestOutageAtBootRetriesByBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ob := &outageBatcher{fakeBatcher: fakeBatcher{lifetime: time.Hour}, up: time.Now().Add(2 * time.Minute)}
		ids := leaves(1000)
		k := New(Options{Batcher: ob, Leaves: ids, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go k.Run(ctx)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		for _, id := range ids {
			if _, _, ok := k.Source(id).Current(); !ok {
				t.Fatalf("leaf %s has no token 8 minutes after the service came back", id)
			}
		}
		ob.mu.Lock()
		defer ob.mu.Unlock()
		// 2 minutes down, Retry-After 5 s and a backoff doubling from 1 s: about 7 rounds
		// of 2 calls.
		if ob.failedCalls > 40 {
			t.Errorf("calls while the service was down: got %d, want the failed batches retried as batches (≤ 40)", ob.failedCalls)
		}
		t.Logf("%d failed calls, then %v", ob.failedCalls, ob.calls)
	})
}

// TestRefusedLeavesRetryTogether: leaves the service refuses at boot (not yet the
// gateway's children, say) retry on their own backoff; leaves without a token coalesce
// by the coalescing window like any other, so 100 of them make a few calls per round,
// not one call each.
func TestRefusedLeavesRetryTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := leaves(100)
		fb := &fakeBatcher{lifetime: time.Hour, refuse: map[string]bool{}}
		for _, id := range ids {
			fb.refuse[id] = true
		}
		k := New(Options{Batcher: fb, Leaves: ids, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go k.Run(ctx)
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		fb.mu.Lock()
		defer fb.mu.Unlock()
		// About 14 rounds of backoff (1 s doubling to 5 min) in 30 minutes.
		if len(fb.calls) > 200 {
			t.Errorf("calls for 100 refused leaves in 30 min: got %d, want them coalesced (≤ 200)", len(fb.calls))
		}
		if s := k.Stats(); s.LeafErrors < 100 {
			t.Errorf("leaf errors: got %d, want every leaf refused and retried", s.LeafErrors)
		}
	})
}
