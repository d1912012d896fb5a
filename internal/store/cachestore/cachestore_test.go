package cachestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/storetest"
)

// checkErr reports err unless it matches want (errors.Is; nil means no error).
func checkErr(tb testing.TB, what string, err, want error) {
	tb.Helper()
	if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
		tb.Errorf("%s: got error %v, want %v", what, err, want)
	}
}

func TestContract(t *testing.T) {
	tests := []struct {
		name string
		opts cachestore.Options
	}{
		{"defaults", cachestore.Options{}},
		// Two entries per table: the suite's reads constantly evict each other.
		{"tiny cache", cachestore.Options{MaxEntries: 2}},
		{"disabled", cachestore.Options{Disabled: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				c, err := cachestore.New(mustFileStore(t), tc.opts)
				if err != nil {
					t.Fatalf("New: got error %v, want nil", err)
				}
				return c // storetest closes it, and with it the file store
			})
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	fs := mustFileStore(t)
	t.Cleanup(func() { fs.Close() })
	tests := []struct {
		name string
		next store.Store
		opts cachestore.Options
	}{
		{"no backend", nil, cachestore.Options{}},
		{"negative TTL", fs, cachestore.Options{TTL: -time.Second}},
		{"negative MaxEntries", fs, cachestore.Options{MaxEntries: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cachestore.New(tc.next, tc.opts); err == nil {
				t.Errorf("New: got error nil, want an error")
			}
		})
	}
}

func TestTTL(t *testing.T) {
	f := newFixture(t, cachestore.Options{TTL: time.Minute}, "dev-1")
	// Steps run in order against one cache.
	steps := []struct {
		name      string
		advance   time.Duration
		wantReads int64
	}{
		{"first lookup reads the backend", 0, 1},
		{"second lookup is a hit", 0, 1},
		{"just before TTL still a hit", time.Minute - time.Nanosecond, 1},
		{"at TTL reads again", time.Nanosecond, 2},
		{"refreshed entry is fresh for another TTL", time.Minute - time.Nanosecond, 2},
		{"and expires again", time.Nanosecond, 3},
	}
	for _, st := range steps {
		f.clock.Advance(st.advance)
		if got := mustGet(t, f.cache, "dev-1"); got.ID != "dev-1" {
			t.Fatalf("%s: got device %q, want dev-1", st.name, got.ID)
		}
		f.wantReads(t, st.name, st.wantReads)
	}
	want := cachestore.Stats{Hits: 3, Misses: 3, BackendReads: 3}
	if got := f.cache.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

// TestOutage walks one cache through a backend outage: stale serving, fast failures,
// the probe schedule with its Retry-After values, and recovery.
func TestOutage(t *testing.T) {
	f := newFixture(t, cachestore.Options{TTL: time.Minute}, "dev-cached", "dev-new", "dev-other")
	mustGet(t, f.cache, "dev-cached")

	var backAt time.Time
	// Steps run in order; each advances the clock, sets the backend, looks up id.
	steps := []struct {
		name           string
		advance        time.Duration
		mode           failMode
		id             string
		wantErr        error
		wantReads      int64
		wantRetryAfter time.Duration
	}{
		{"fresh entry is a hit while down", 30 * time.Second, down, "dev-cached", nil, 1, 0},
		{"expired entry: one failed read opens the breaker, stale is served", 31 * time.Second, down, "dev-cached", nil, 2, 250 * time.Millisecond},
		{"stale again, no read while open", 0, down, "dev-cached", nil, 2, 250 * time.Millisecond},
		{"uncached fails fast without a read", 0, down, "dev-new", cachestore.ErrCircuitOpen, 2, 250 * time.Millisecond},
		{"Retry-After counts down", 100 * time.Millisecond, down, "dev-new", cachestore.ErrCircuitOpen, 2, 150 * time.Millisecond},
		{"probe after 250ms fails, backoff doubles", 150 * time.Millisecond, down, "dev-new", store.ErrUnavailable, 3, 500 * time.Millisecond},
		{"refused until the next probe", 499 * time.Millisecond, down, "dev-new", cachestore.ErrCircuitOpen, 3, time.Millisecond},
		{"probe after 500ms fails", time.Millisecond, down, "dev-new", store.ErrUnavailable, 4, time.Second},
		{"probe after 1s fails", time.Second, down, "dev-new", store.ErrUnavailable, 5, 2 * time.Second},
		{"probe after 2s fails", 2 * time.Second, down, "dev-new", store.ErrUnavailable, 6, 4 * time.Second},
		{"probe after 4s fails, backoff capped", 4 * time.Second, down, "dev-new", store.ErrUnavailable, 7, 5 * time.Second},
		{"probe after 5s fails, stays capped", 5 * time.Second, down, "dev-new", store.ErrUnavailable, 8, 5 * time.Second},
		{"stale still served between probes", 0, down, "dev-cached", nil, 8, 5 * time.Second},
		{"backend back, still refused until the probe", 4 * time.Second, healthy, "dev-new", cachestore.ErrCircuitOpen, 8, time.Second},
		{"probe succeeds and closes the breaker", time.Second, healthy, "dev-new", nil, 9, 0},
		{"uncached lookups read again", 0, healthy, "dev-other", nil, 10, 0},
		{"the stale entry is refreshed", 0, healthy, "dev-cached", nil, 11, 0},
		{"and is fresh again", 0, healthy, "dev-cached", nil, 11, 0},
	}
	for _, st := range steps {
		f.clock.Advance(st.advance)
		if st.mode == healthy && failMode(f.backend.mode.Load()) != healthy {
			backAt = f.clock.Now()
		}
		f.backend.setMode(st.mode)
		d, err := f.cache.GetDevice(t.Context(), st.id)
		checkErr(t, st.name, err, st.wantErr)
		if err == nil && d.ID != st.id {
			t.Errorf("%s: got device %q, want %q", st.name, d.ID, st.id)
		}
		if err != nil && !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: got error %v, want one wrapping %v", st.name, err, store.ErrUnavailable)
		}
		f.wantReads(t, st.name, st.wantReads)
		if errors.Is(err, cachestore.ErrCircuitOpen) {
			// The refusal tells the client when to come back, in whole seconds.
			var ra interface{ RetryAfter() int }
			want := max(1, int((st.wantRetryAfter+time.Second-1)/time.Second))
			if !errors.As(err, &ra) || ra.RetryAfter() != want {
				t.Errorf("%s: refusal %v carries no RetryAfter of %d s", st.name, err, want)
			}
		}
		if got := f.cache.RetryAfter(); got != st.wantRetryAfter {
			t.Errorf("%s: RetryAfter got %v, want %v", st.name, got, st.wantRetryAfter)
		}
		if st.wantRetryAfter == 0 && st.mode == healthy && !backAt.IsZero() {
			// The first success after the backend returned: the design's recovery bar.
			if took := f.clock.Now().Sub(backAt); took > 30*time.Second {
				t.Errorf("recovery: got %v after the backend returned, want at most 30s", took)
			}
			backAt = time.Time{}
		}
	}
	want := cachestore.Stats{Hits: 2, Misses: 17, BackendReads: 11, StaleServed: 3, FastFailures: 4}
	if got := f.cache.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestStaleWindow(t *testing.T) {
	const ttl, staleFor = time.Minute, 10 * time.Minute
	tests := []struct {
		name    string
		stale   time.Duration
		advance time.Duration
		wantErr error
	}{
		{"just past TTL", staleFor, ttl, nil},
		{"last instant of the stale window", staleFor, ttl + staleFor - time.Nanosecond, nil},
		{"stale window over", staleFor, ttl + staleFor, store.ErrUnavailable},
		{"stale serving off", -1, ttl, store.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{TTL: ttl, StaleIfError: tc.stale}, "dev-1")
			mustGet(t, f.cache, "dev-1")
			f.backend.setMode(down)
			f.clock.Advance(tc.advance)
			_, err := f.cache.GetDevice(t.Context(), "dev-1")
			checkErr(t, "GetDevice(dev-1) during outage", err, tc.wantErr)
		})
	}
}

// TestFailureKinds checks which backend errors count as an outage: only those may be
// answered with stale data and open the breaker.
func TestFailureKinds(t *testing.T) {
	tests := []struct {
		name string
		mode failMode
		// deleteDev1 deletes dev-1 in the backend, behind the cache.
		deleteDev1 bool
		// wantFirstErrs are what the first, uncached lookup (dev-2) must wrap.
		wantFirstErrs []error
		// wantExpiredErr is the result of looking up dev-1 after its TTL.
		wantExpiredErr error
		// wantOpen says whether the breaker opened: dev-3 then fails fast.
		wantOpen bool
	}{
		{"unavailable", down, false, []error{store.ErrUnavailable}, nil, true},
		{"deadline exceeded", deadline, false, []error{store.ErrUnavailable, context.DeadlineExceeded}, nil, true},
		{"other error: not stale, no breaker", brokenReads, false, []error{errBroken}, errBroken, false},
		{"deleted in the backend: not found, not stale", healthy, true, nil, store.ErrNotFound, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{TTL: time.Minute}, "dev-1", "dev-2", "dev-3")
			mustGet(t, f.cache, "dev-1")
			f.backend.setMode(tc.mode)
			if tc.deleteDev1 {
				if err := f.backend.Store.DeleteDevice(t.Context(), "dev-1"); err != nil {
					t.Fatalf("DeleteDevice(dev-1) in the backend: got error %v, want nil", err)
				}
			}
			_, err := f.cache.GetDevice(t.Context(), "dev-2")
			if tc.wantFirstErrs == nil {
				checkErr(t, "GetDevice(dev-2)", err, nil)
			}
			for _, want := range tc.wantFirstErrs {
				checkErr(t, "GetDevice(dev-2)", err, want)
			}
			// Past dev-1's TTL, and past the first probe time if the breaker opened, so
			// this lookup asks the backend again.
			f.clock.Advance(time.Minute)
			d, err := f.cache.GetDevice(t.Context(), "dev-1")
			checkErr(t, "GetDevice(dev-1) after TTL", err, tc.wantExpiredErr)
			if err == nil && d.ID != "dev-1" {
				t.Errorf("GetDevice(dev-1) after TTL: got device %q, want dev-1", d.ID)
			}

			before := f.backend.deviceGets.Load()
			_, err = f.cache.GetDevice(t.Context(), "dev-3")
			gotOpen := errors.Is(err, cachestore.ErrCircuitOpen)
			if gotOpen != tc.wantOpen {
				t.Errorf("GetDevice(dev-3): got error %v, want breaker open %v", err, tc.wantOpen)
			}
			if tc.wantOpen {
				f.wantReads(t, "GetDevice(dev-3) while open", before)
			}
		})
	}
}

func TestNegativeCache(t *testing.T) {
	tests := []struct {
		name        string
		negativeTTL time.Duration
		// steps run in order; each may act, then looks up "ghost".
		steps []negStep
	}{
		{
			name: "remembered for NegativeTTL", negativeTTL: 5 * time.Second,
			steps: []negStep{
				{name: "unknown device reads the backend", wantErr: store.ErrNotFound, wantReads: 1},
				{name: "repeat is a hit", wantErr: store.ErrNotFound, wantReads: 1},
				{name: "flood of repeats stays a hit", repeat: 1000, wantErr: store.ErrNotFound, wantReads: 1},
				{name: "just before NegativeTTL", advance: 5*time.Second - time.Nanosecond, wantErr: store.ErrNotFound, wantReads: 1},
				{name: "at NegativeTTL reads again", advance: time.Nanosecond, wantErr: store.ErrNotFound, wantReads: 2},
			},
		},
		{
			name: "CreateDevice through the cache invalidates", negativeTTL: 5 * time.Second,
			steps: []negStep{
				{name: "unknown device", wantErr: store.ErrNotFound, wantReads: 1},
				{name: "created through the cache", act: createThroughCache, wantReads: 2},
				{name: "now cached", wantReads: 2},
			},
		},
		{
			name: "created on another replica: visible after NegativeTTL", negativeTTL: 5 * time.Second,
			steps: []negStep{
				{name: "unknown device", wantErr: store.ErrNotFound, wantReads: 1},
				{name: "created behind the cache", act: createBehindCache, wantErr: store.ErrNotFound, wantReads: 1},
				{name: "after NegativeTTL", advance: 5 * time.Second, wantReads: 2},
			},
		},
		{
			name: "negative caching off", negativeTTL: -1,
			steps: []negStep{
				{name: "unknown device", wantErr: store.ErrNotFound, wantReads: 1},
				{name: "every repeat reads", repeat: 3, wantErr: store.ErrNotFound, wantReads: 4},
			},
		},
		{
			name: "not served stale during an outage", negativeTTL: 5 * time.Second,
			steps: []negStep{
				{name: "unknown device", wantErr: store.ErrNotFound, wantReads: 1},
				{name: "expired during outage", advance: 5 * time.Second, act: goDown, wantErr: store.ErrUnavailable, wantReads: 2},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{NegativeTTL: tc.negativeTTL})
			for _, st := range tc.steps {
				f.clock.Advance(st.advance)
				if st.act != nil {
					st.act(t, f)
				}
				for range max(st.repeat, 1) {
					d, err := f.cache.GetDevice(t.Context(), "ghost")
					checkErr(t, st.name, err, st.wantErr)
					if err == nil && d.ID != "ghost" {
						t.Errorf("%s: got device %q, want ghost", st.name, d.ID)
					}
				}
				f.wantReads(t, st.name, st.wantReads)
			}
		})
	}
}

type negStep struct {
	name      string
	advance   time.Duration
	act       func(testing.TB, *fixture)
	repeat    int
	wantErr   error
	wantReads int64
}

func createThroughCache(tb testing.TB, f *fixture) {
	tb.Helper()
	if err := f.cache.CreateDevice(tb.Context(), device("ghost", "hub-a")); err != nil {
		tb.Fatalf("CreateDevice(ghost): got error %v, want nil", err)
	}
}

func createBehindCache(tb testing.TB, f *fixture) {
	tb.Helper()
	if err := f.backend.Store.CreateDevice(tb.Context(), device("ghost", "hub-a")); err != nil {
		tb.Fatalf("CreateDevice(ghost) in the backend: got error %v, want nil", err)
	}
}

func goDown(_ testing.TB, f *fixture) { f.backend.setMode(down) }

func disable(d *domain.Device) error {
	d.Disabled = true
	return nil
}

// TestWritesInvalidate checks that writes through the cache are seen at once, and
// documents that writes behind it (another replica) are seen only after TTL.
func TestWritesInvalidate(t *testing.T) {
	const ttl = time.Minute
	tests := []struct {
		name         string
		write        func(ctx context.Context, f *fixture) error
		advance      time.Duration
		wantErr      error
		wantDisabled bool
		wantReads    int64
	}{
		{
			name: "UpdateDevice through the cache",
			write: func(ctx context.Context, f *fixture) error {
				_, err := f.cache.UpdateDevice(ctx, "dev-1", disable)
				return err
			},
			wantDisabled: true, wantReads: 2,
		},
		{
			name:    "DeleteDevice through the cache",
			write:   func(ctx context.Context, f *fixture) error { return f.cache.DeleteDevice(ctx, "dev-1") },
			wantErr: store.ErrNotFound, wantReads: 2,
		},
		{
			name: "failed UpdateDevice still invalidates",
			write: func(ctx context.Context, f *fixture) error {
				_, err := f.cache.UpdateDevice(ctx, "dev-1", func(*domain.Device) error { return errBroken })
				if !errors.Is(err, errBroken) {
					return fmt.Errorf("got error %v, want %v", err, errBroken)
				}
				return nil
			},
			wantReads: 2,
		},
		{
			name: "UpdateDevice behind the cache: old record until TTL",
			write: func(ctx context.Context, f *fixture) error {
				_, err := f.backend.Store.UpdateDevice(ctx, "dev-1", disable)
				return err
			},
			wantDisabled: false, wantReads: 1,
		},
		{
			name: "UpdateDevice behind the cache: seen after TTL",
			write: func(ctx context.Context, f *fixture) error {
				_, err := f.backend.Store.UpdateDevice(ctx, "dev-1", disable)
				return err
			},
			advance: ttl, wantDisabled: true, wantReads: 2,
		},
		{
			name:      "DeleteDevice behind the cache: still served until TTL",
			write:     func(ctx context.Context, f *fixture) error { return f.backend.Store.DeleteDevice(ctx, "dev-1") },
			wantReads: 1,
		},
		{
			name:    "DeleteDevice behind the cache: gone after TTL",
			write:   func(ctx context.Context, f *fixture) error { return f.backend.Store.DeleteDevice(ctx, "dev-1") },
			advance: ttl, wantErr: store.ErrNotFound, wantReads: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{TTL: ttl}, "dev-1")
			mustGet(t, f.cache, "dev-1")
			if err := tc.write(t.Context(), f); err != nil {
				t.Fatalf("write: got error %v, want nil", err)
			}
			f.clock.Advance(tc.advance)
			d, err := f.cache.GetDevice(t.Context(), "dev-1")
			checkErr(t, "GetDevice(dev-1) after the write", err, tc.wantErr)
			if err == nil && d.Disabled != tc.wantDisabled {
				t.Errorf("GetDevice(dev-1) after the write: got Disabled %v, want %v", d.Disabled, tc.wantDisabled)
			}
			f.wantReads(t, "after the write", tc.wantReads)
		})
	}
}

// TestReadRacingWrite: a read that fetched the record before a write through the
// cache, and returns after it, must not put the old record back into the cache.
func TestReadRacingWrite(t *testing.T) {
	tests := []struct {
		name         string
		write        func(ctx context.Context, c *cachestore.Store) error
		wantErr      error
		wantDisabled bool
	}{
		{
			name: "UpdateDevice",
			write: func(ctx context.Context, c *cachestore.Store) error {
				_, err := c.UpdateDevice(ctx, "dev-1", disable)
				return err
			},
			wantDisabled: true,
		},
		{
			name:    "DeleteDevice",
			write:   func(ctx context.Context, c *cachestore.Store) error { return c.DeleteDevice(ctx, "dev-1") },
			wantErr: store.ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{}, "dev-1")
			entered, release := f.backend.holdReadsAfterRead()
			defer release()
			old := f.getAsync(t.Context(), "dev-1")
			<-entered // the old record is read; its return is held
			if err := tc.write(t.Context(), f.cache); err != nil {
				t.Fatalf("write: got error %v, want nil", err)
			}
			release()
			// The racing caller may see the old record: its lookup overlapped the write.
			checkErr(t, "racing GetDevice(dev-1)", <-old, nil)

			for i := range 2 {
				d, err := f.cache.GetDevice(t.Context(), "dev-1")
				checkErr(t, fmt.Sprintf("GetDevice(dev-1) #%d after the write", i+1), err, tc.wantErr)
				if err == nil && d.Disabled != tc.wantDisabled {
					t.Errorf("GetDevice(dev-1) #%d after the write: got Disabled %v, want %v", i+1, d.Disabled, tc.wantDisabled)
				}
			}
		})
	}
}

// TestLookupAfterWriteSkipsOlderRead: a lookup that starts after a write through the
// cache returned must not join a read that started before it.
func TestLookupAfterWriteSkipsOlderRead(t *testing.T) {
	// synctest.Wait tells when the later lookup has either joined the older read or
	// started its own; nothing else can observe that without sleeping.
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, cachestore.Options{}, "dev-1")
		entered, release := f.backend.holdReadsAfterRead()
		defer release()
		go f.cache.GetDevice(t.Context(), "dev-1")
		<-entered // the old record is read; its return is held
		if _, err := f.cache.UpdateDevice(t.Context(), "dev-1", disable); err != nil {
			t.Fatalf("UpdateDevice(dev-1): got error %v, want nil", err)
		}
		later := make(chan domain.Device, 1)
		go func() {
			d, err := f.cache.GetDevice(t.Context(), "dev-1")
			checkErr(t, "GetDevice(dev-1) after the write", err, nil)
			later <- d
		}()
		synctest.Wait()
		release()
		if d := <-later; !d.Disabled {
			t.Errorf("GetDevice(dev-1) after the write: got Disabled %v, want true", d.Disabled)
		}
		f.wantReads(t, "after the write", 2)
	})
}

func TestHubCache(t *testing.T) {
	f := newFixture(t, cachestore.Options{})
	ctx := t.Context()
	// Steps run in order against one cache.
	steps := []struct {
		name      string
		act       func() error
		wantErr   error
		wantReads int64
	}{
		{"first lookup reads", nil, nil, 1},
		{"second is a hit", nil, nil, 1},
		{"DeleteHub through the cache", func() error { return f.cache.DeleteHub(ctx, "hub-a") }, store.ErrNotFound, 2},
		{"not-found hubs are not remembered", nil, store.ErrNotFound, 3},
		{"CreateHub through the cache", func() error { return f.cache.CreateHub(ctx, hub("hub-a")) }, nil, 4},
		{"cached again", nil, nil, 4},
	}
	for _, st := range steps {
		if st.act != nil {
			if err := st.act(); err != nil {
				t.Fatalf("%s: got error %v, want nil", st.name, err)
			}
		}
		h, err := f.cache.GetHub(ctx, "hub-a")
		checkErr(t, st.name, err, st.wantErr)
		if err == nil && h.Hostname != "hub-a.azure-devices.net" {
			t.Errorf("%s: got hostname %q, want hub-a.azure-devices.net", st.name, h.Hostname)
		}
		if got := f.backend.hubGets.Load(); got != st.wantReads {
			t.Errorf("%s: got %d backend GetHub calls, want %d", st.name, got, st.wantReads)
		}
	}
}

func TestCopyIsolation(t *testing.T) {
	mutations := []struct {
		name   string
		mutate func(d *domain.Device)
	}{
		{"module key", func(d *domain.Device) { d.Modules[0].PrimaryKey = "stolen" }},
		{"modules appended", func(d *domain.Device) { d.Modules = append(d.Modules, domain.Module{ID: "evil"}) }},
		{"secret byte", func(d *domain.Device) { d.Auth.Secret[0] ^= 0xff }},
		{"secret appended", func(d *domain.Device) { d.Auth.Secret = append(d.Auth.Secret, 'x') }},
		{"plain fields", func(d *domain.Device) { d.PrimaryKey, d.Disabled = "stolen", true }},
	}
	for _, m := range mutations {
		t.Run(m.name+"/hit after hit", func(t *testing.T) {
			f := newFixture(t, cachestore.Options{}, "dev-1")
			mustGet(t, f.cache, "dev-1")
			got := mustGet(t, f.cache, "dev-1")
			m.mutate(&got)
			wantSame(t, mustGet(t, f.cache, "dev-1"), device("dev-1", "hub-a"))
		})
		t.Run(m.name+"/callers sharing one read", func(t *testing.T) {
			f := newFixture(t, cachestore.Options{}, "dev-1")
			entered, release := f.backend.holdReads()
			defer release()
			var results [2]domain.Device
			var errs [2]error
			var wg sync.WaitGroup
			for i := range results {
				wg.Go(func() { results[i], errs[i] = f.cache.GetDevice(t.Context(), "dev-1") })
			}
			<-entered
			release()
			wg.Wait()
			for i, err := range errs {
				checkErr(t, fmt.Sprintf("GetDevice #%d", i), err, nil)
			}
			m.mutate(&results[0])
			wantSame(t, results[1], device("dev-1", "hub-a"))
			wantSame(t, mustGet(t, f.cache, "dev-1"), device("dev-1", "hub-a"))
		})
	}
}

// wantSame compares the fields TestCopyIsolation mutates.
func wantSame(tb testing.TB, got, want domain.Device) {
	tb.Helper()
	if got.PrimaryKey != want.PrimaryKey || got.Disabled != want.Disabled {
		tb.Errorf("PrimaryKey, Disabled: got %q, %v, want %q, %v", got.PrimaryKey, got.Disabled, want.PrimaryKey, want.Disabled)
	}
	if !slices.Equal(got.Modules, want.Modules) {
		tb.Errorf("Modules: got %+v, want %+v", got.Modules, want.Modules)
	}
	if !bytes.Equal(got.Auth.Secret, want.Auth.Secret) {
		tb.Errorf("Auth.Secret: got %x, want %x", got.Auth.Secret, want.Auth.Secret)
	}
}

// TestStampede: 1,000 concurrent first lookups of 100 devices on a cold cache must
// cost at most one backend read per device.
func TestStampede(t *testing.T) {
	const devices, callers = 100, 1000
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%03d", i)
	}
	tests := []struct {
		name string
		// held blocks every backend read until all callers have asked, so the whole
		// crowd piles onto reads in flight.
		held bool
	}{
		{"reads held until every caller has asked", true},
		{"free running", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{}, ids...)
			var entered <-chan string
			release := func() {}
			if tc.held {
				entered, release = f.backend.holdReads()
				defer release()
			}
			results := make([]domain.Device, callers)
			errs := make([]error, callers)
			var asked, done sync.WaitGroup
			asked.Add(callers)
			for i := range callers {
				done.Go(func() {
					asked.Done()
					results[i], errs[i] = f.cache.GetDevice(t.Context(), ids[i%devices])
				})
			}
			asked.Wait()
			if tc.held {
				// Each device's first caller started a read; all of them are now waiting.
				for range devices {
					<-entered
				}
				release()
			}
			done.Wait()

			for i, err := range errs {
				if err != nil {
					t.Fatalf("caller %d: GetDevice(%q): got error %v, want nil", i, ids[i%devices], err)
				}
				if results[i].ID != ids[i%devices] {
					t.Fatalf("caller %d: got device %q, want %q", i, results[i].ID, ids[i%devices])
				}
			}
			if got := f.backend.deviceGets.Load(); got > devices {
				t.Errorf("backend GetDevice calls: got %d, want <= %d", got, devices)
			}
			if key, n := f.backend.maxPerKey(); n > 1 {
				t.Errorf("backend reads of %q: got %d, want <= 1", key, n)
			}
			st := f.cache.Stats()
			if st.Hits+st.Misses != callers {
				t.Errorf("Hits+Misses: got %d, want %d", st.Hits+st.Misses, callers)
			}
		})
	}
}

// TestProbeInFlight: while the one probe is out, every other miss still fails fast.
func TestProbeInFlight(t *testing.T) {
	f := newFixture(t, cachestore.Options{}, "dev-a", "dev-b")
	f.backend.setMode(down)
	_, err := f.cache.GetDevice(t.Context(), "dev-a")
	checkErr(t, "GetDevice(dev-a) opening the breaker", err, store.ErrUnavailable)

	f.clock.Advance(250 * time.Millisecond)
	f.backend.setMode(healthy)
	entered, release := f.backend.holdReads()
	defer release()
	probe := f.getAsync(t.Context(), "dev-a")
	<-entered

	_, err = f.cache.GetDevice(t.Context(), "dev-b")
	checkErr(t, "GetDevice(dev-b) while the probe is out", err, cachestore.ErrCircuitOpen)
	f.wantReads(t, "while the probe is out", 2)
	if got, want := f.cache.RetryAfter(), 250*time.Millisecond; got != want {
		t.Errorf("RetryAfter while the probe is out: got %v, want %v", got, want)
	}

	release()
	checkErr(t, "probe GetDevice(dev-a)", <-probe, nil)
	mustGet(t, f.cache, "dev-b")
	f.wantReads(t, "after the probe succeeded", 3)
	if got := f.cache.RetryAfter(); got != 0 {
		t.Errorf("RetryAfter after recovery: got %v, want 0", got)
	}
}

// manualCtx is a context the test expires by hand, with the error of its choice, so
// deadline behaviour is tested without timers.
type manualCtx struct {
	context.Context
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newManualCtx(parent context.Context) *manualCtx {
	return &manualCtx{Context: parent, done: make(chan struct{})}
}

func (c *manualCtx) Done() <-chan struct{} { return c.done }

func (c *manualCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *manualCtx) expire(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

// TestCallerGivesUp: a caller whose context ends stops waiting, the shared read goes
// on and fills the cache, and a deadline with an expired entry at hand serves it.
func TestCallerGivesUp(t *testing.T) {
	tests := []struct {
		name      string
		cached    bool // dev-1 was read before and has expired
		ctxErr    error
		wantErrs  []error
		wantStale uint64
	}{
		{"cancelled", false, context.Canceled, []error{context.Canceled}, 0},
		{"deadline, nothing cached", false, context.DeadlineExceeded, []error{store.ErrUnavailable, context.DeadlineExceeded}, 0},
		{"deadline, expired entry served", true, context.DeadlineExceeded, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cachestore.Options{TTL: time.Minute}, "dev-1")
			var reads int64
			if tc.cached {
				mustGet(t, f.cache, "dev-1")
				f.clock.Advance(time.Minute)
				reads = 1
			}
			entered, release := f.backend.holdReads()
			defer release()
			ctx := newManualCtx(t.Context())
			res := f.getAsync(ctx, "dev-1")
			<-entered
			ctx.expire(tc.ctxErr)
			err := <-res
			if tc.wantErrs == nil {
				checkErr(t, "GetDevice(dev-1)", err, nil)
			}
			for _, want := range tc.wantErrs {
				checkErr(t, "GetDevice(dev-1)", err, want)
			}
			if got := f.cache.Stats().StaleServed; got != tc.wantStale {
				t.Errorf("StaleServed: got %d, want %d", got, tc.wantStale)
			}

			// The abandoned read completes and is shared with, or cached for, the next caller.
			release()
			mustGet(t, f.cache, "dev-1")
			mustGet(t, f.cache, "dev-1")
			f.wantReads(t, "after the abandoned read completed", reads+1)
		})
	}
}

func TestEviction(t *testing.T) {
	ids := make([]string, 12)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%02d", i)
	}
	f := newFixture(t, cachestore.Options{MaxEntries: 10}, ids...)
	for _, id := range ids[:10] {
		mustGet(t, f.cache, id)
	}
	// Steps run in order; the cache holds 10 devices, least recently used goes first.
	steps := []struct {
		name      string
		id        string
		wantReads int64
	}{
		{"full cache, oldest still there", "dev-00", 10},
		{"eleventh device evicts the least recently used (dev-01)", "dev-10", 11},
		{"recently touched dev-00 survived", "dev-00", 11},
		{"dev-01 was evicted", "dev-01", 12},
		{"which evicted dev-02", "dev-02", 13},
		{"dev-10 still cached", "dev-10", 13},
	}
	for _, st := range steps {
		mustGet(t, f.cache, st.id)
		f.wantReads(t, st.name, st.wantReads)
		if got := f.cache.Len(); got > 10 {
			t.Errorf("%s: Len got %d, want <= 10", st.name, got)
		}
	}
}

func TestEvictionBoundSharded(t *testing.T) {
	const n, maxEntries = 1000, 300
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%04d", i)
	}
	f := newFixture(t, cachestore.Options{MaxEntries: maxEntries}, ids...)
	for _, id := range ids {
		mustGet(t, f.cache, id)
	}
	if got := f.cache.Len(); got > maxEntries {
		t.Errorf("Len after %d devices: got %d, want <= %d", n, got, maxEntries)
	}
	// The last device read is the most recently used and must still be there.
	mustGet(t, f.cache, ids[n-1])
	f.wantReads(t, "re-reading the newest device", n)
}

func TestDisabled(t *testing.T) {
	f := newFixture(t, cachestore.Options{Disabled: true}, "dev-1")
	for i := range 3 {
		mustGet(t, f.cache, "dev-1")
		f.wantReads(t, fmt.Sprintf("lookup %d", i+1), int64(i+1))
	}
	f.backend.setMode(down)
	for i := range 2 {
		_, err := f.cache.GetDevice(t.Context(), "dev-1")
		checkErr(t, "GetDevice while down", err, store.ErrUnavailable)
		if errors.Is(err, cachestore.ErrCircuitOpen) {
			t.Errorf("GetDevice while down #%d: got %v, want the backend's own error", i, err)
		}
	}
	f.wantReads(t, "while down", 5)
	if got := f.cache.RetryAfter(); got != 0 {
		t.Errorf("RetryAfter: got %v, want 0", got)
	}
	want := cachestore.Stats{BackendReads: 5}
	if got := f.cache.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}
