package cachestore

import (
	"sync"
	"sync/atomic"
	"time"
)

const (
	// minBackoff is the wait before the first probe after the breaker opens: long
	// enough that a dead backend costs one read per quarter second, short enough that
	// a blip is over before devices notice.
	minBackoff = 250 * time.Millisecond
	// maxBackoff caps the doubling, so a backend that comes back is found within
	// maxBackoff plus one read (the design asks for recovery within 30 s).
	maxBackoff = 5 * time.Second
)

// breaker decides whether a cache miss may ask the backend.
//
// Closed: every miss may read the backend. The first read that fails with an
// availability error opens it.
//
// Open: misses are refused without a backend call until nextProbe; then the first
// miss to arrive becomes the probe (half-open) while every other miss is still
// refused. A probe that succeeds closes the breaker; one that fails doubles the
// backoff (minBackoff up to maxBackoff) and waits again. Any successful read closes
// it too, since it proves the backend answers.
type breaker struct {
	// open mirrors the state so the closed path, taken by every miss while the
	// backend is healthy, costs one atomic load and no lock. It only changes under mu.
	open atomic.Bool

	mu        sync.Mutex
	probing   bool          // a probe is in flight
	probeID   uint64        // names the current probe, so only its own result counts as its verdict
	backoff   time.Duration // the wait that led to nextProbe
	nextProbe int64         // Unix nanoseconds at which the next probe may start
}

// allow reports whether a miss at now may read the backend. A non-zero probe means
// the read is the breaker's probe and must be passed to report.
func (b *breaker) allow(now int64) (probe uint64, ok bool) {
	if !b.open.Load() {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return 0, true
	}
	if b.probing || now < b.nextProbe {
		return 0, false
	}
	b.probing = true
	b.probeID++
	return b.probeID, true
}

// report records the outcome of a backend read that allow let through: failed means
// the backend was unavailable. probe is what allow returned for it.
func (b *breaker) report(probe uint64, failed bool, now int64) {
	if !failed {
		if !b.open.Load() {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.open.Store(false)
		b.probing = false
		b.backoff = 0
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open.Load():
		b.open.Store(true)
		b.backoff = minBackoff
		b.nextProbe = now + int64(b.backoff)
	case probe != 0 && probe == b.probeID && b.probing:
		b.probing = false
		b.backoff = min(2*b.backoff, maxBackoff)
		b.nextProbe = now + int64(b.backoff)
	default:
		// A read that started before the breaker opened: the probe schedule stands.
	}
}

// retryAfter returns how long a client refused at now should wait: the time until
// the next probe, or minBackoff while a probe is due or in flight (its outcome is
// not known yet, and a zero would invite an immediate retry loop).
func (b *breaker) retryAfter(now int64) time.Duration {
	if !b.open.Load() {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return 0
	}
	if b.probing || now >= b.nextProbe {
		return minBackoff
	}
	return time.Duration(b.nextProbe - now)
}
