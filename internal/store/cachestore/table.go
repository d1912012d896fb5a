package cachestore

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/singleflight"

	"github.com/tokensvc/tokensvc/internal/store"
)

// table is the cache, read deduplication and expiry policy for one kind of record.
type table[V any] struct {
	s     *Store
	what  string // "device" or "hub", for error messages
	cache *lru[V]
	group singleflight.Group
	read  func(context.Context, string) (V, error)
	// clone returns a copy of a record that shares no mutable memory with it.
	clone func(*V) V
	// ttl, stale and negTTL are nanoseconds; see Options.
	ttl, stale, negTTL int64
}

// get returns the entry for key: cached, read from the backend, or (while the backend
// is unavailable) an expired one still within its stale window. The entry must not be
// modified.
func (t *table[V]) get(ctx context.Context, key string) (*entry[V], error) {
	now := t.s.now().UnixNano()
	old, fresh := t.cache.lookup(key, now)
	if fresh {
		if old.err != nil {
			return nil, old.err
		}
		return old, nil
	}
	t.s.misses.Add(1)
	if old != nil && (old.err != nil || now >= old.staleUntil) {
		old = nil // nothing we could serve if the backend fails
	}
	return t.load(ctx, key, old, now)
}

// load asks the backend for key, unless the breaker refuses, and serves stale (the
// expired entry, or nil) if the backend turns out to be unavailable.
func (t *table[V]) load(ctx context.Context, key string, stale *entry[V], now int64) (*entry[V], error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s %q: %w", t.what, key, err)
	}
	probe, ok := t.s.breaker.allow(now)
	if !ok {
		if stale != nil {
			t.s.staleServed.Add(1)
			return stale, nil
		}
		t.s.fastFailures.Add(1)
		return nil, &circuitOpenError{what: t.what, key: key, wait: t.s.breaker.retryAfter(now)}
	}

	var ch <-chan singleflight.Result
	if probe != 0 {
		// The probe runs outside the singleflight group: joining a read that started
		// before the breaker opened would leave nobody to report the probe's verdict.
		// There is only ever one probe, so it cannot stampede.
		c := make(chan singleflight.Result, 1)
		go func() {
			e, err := t.fetch(ctx, key, probe)
			c <- singleflight.Result{Val: e, Err: err}
		}()
		ch = c
	} else {
		ch = t.group.DoChan(key, func() (any, error) { return t.fetch(ctx, key, 0) })
	}

	select {
	case r := <-ch:
		if r.Err == nil {
			return r.Val.(*entry[V]), nil
		}
		if stale != nil && unavailable(r.Err) {
			t.s.staleServed.Add(1)
			return stale, nil
		}
		return nil, r.Err
	case <-ctx.Done():
		// The shared read goes on and fills the cache for whoever asks next.
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			if stale != nil {
				t.s.staleServed.Add(1)
				return stale, nil
			}
			// The backend did not answer within the caller's budget.
			return nil, fmt.Errorf("get %s %q: %w: %w", t.what, key, store.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("get %s %q: %w", t.what, key, err)
	}
}

// fetch reads key from the backend, caches the outcome and reports it to the
// breaker. It runs once per shared read, on a goroutine of its own, so it completes
// and reports even after every caller waiting on it has given up.
func (t *table[V]) fetch(ctx context.Context, key string, probe uint64) (any, error) {
	start := t.s.now().UnixNano()
	cur, fresh, gen := t.cache.peek(key, start)
	if fresh && probe == 0 {
		// A read for key finished between our caller's lookup and this read joining
		// the group; without this check that gap lets a second read through.
		if cur.err != nil {
			return nil, cur.err
		}
		return cur, nil
	}

	// The read belongs to every caller waiting on it, so one caller cancelling must
	// not fail it for the rest; its deadline still bounds it, as does maxReadTime.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxReadTime)
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		var cancelDeadline context.CancelFunc
		rctx, cancelDeadline = context.WithDeadline(rctx, d)
		defer cancelDeadline()
	}

	t.s.backendReads.Add(1)
	v, err := t.read(rctx, key)
	failed := unavailable(err)
	t.s.breaker.report(probe, failed, t.s.now().UnixNano())

	switch {
	case err == nil:
		// Expiry counts from the start of the read: the record is at least that new.
		e := &entry[V]{key: key, val: t.clone(&v), freshUntil: start + t.ttl, staleUntil: start + t.ttl + t.stale}
		t.cache.put(e, gen)
		return e, nil
	case errors.Is(err, store.ErrNotFound):
		// The record is gone: its old entry must not be served stale later.
		if t.negTTL > 0 {
			t.cache.put(&entry[V]{key: key, err: err, freshUntil: start + t.negTTL, staleUntil: start + t.negTTL}, gen)
		} else {
			t.cache.drop(key, gen)
		}
		return nil, err
	case failed && !errors.Is(err, store.ErrUnavailable):
		// A deadline is an outage as far as callers are concerned: map it to 503.
		return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	default:
		return nil, err
	}
}

// invalidate forgets key after a write: its entry, and any read under way, whose
// result may predate the write.
func (t *table[V]) invalidate(key string) {
	t.cache.invalidate(key)
	t.group.Forget(key)
}
