// Package limits keeps one device, or all of them, from taking more than their share:
// a token bucket per authenticated device, a token bucket for the whole service, and a
// bound on concurrent requests that refuses instead of queueing. Time is injected, so
// tests drive the buckets with a fake clock.
package limits

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sentinel errors, wrapped by *Error.
var (
	// ErrRateLimited means a token bucket is empty; retry after Error.RetryAfter.
	ErrRateLimited = errors.New("rate limit exceeded")
	// ErrOverloaded means too many requests are in flight; retry shortly.
	ErrOverloaded = errors.New("too many requests in flight")
)

// Limit names, as reported by Error.Limit and used as metric label values.
const (
	LimitDevice   = "device"
	LimitGlobal   = "global"
	LimitInflight = "inflight"
)

// Error is a refusal: which limit, and when a retry could succeed.
type Error struct {
	Limit string
	// Wait is how long until the bucket has a token again (a lower bound for inflight).
	Wait time.Duration
	err  error
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%s limit)", e.err, e.Limit) }

// Unwrap returns ErrRateLimited or ErrOverloaded.
func (e *Error) Unwrap() error { return e.err }

// RetryAfter is Wait in whole seconds, rounded up and at least 1, as the Retry-After
// header carries it.
func (e *Error) RetryAfter() int {
	s := int(math.Ceil(e.Wait.Seconds()))
	return max(s, 1)
}

// Config sets the limits; a zero rate or bound disables that limit.
type Config struct {
	// DeviceRate is tokens per second each device may take, DeviceBurst its bucket size.
	DeviceRate  float64
	DeviceBurst int
	// GlobalRate is requests per second for the whole service; its burst is GlobalBurst,
	// or one second's worth when zero.
	GlobalRate  float64
	GlobalBurst int
	// MaxInflight bounds concurrent requests.
	MaxInflight int
}

// Limits enforces a Config. It is safe for concurrent use.
type Limits struct {
	cfg      Config
	now      func() time.Time
	global   *rate.Limiter
	inflight chan struct{}

	mu        sync.Mutex
	devices   map[string]*deviceBucket
	lastSweep time.Time
	// idle is how long an untouched bucket takes to refill completely; such a bucket
	// is indistinguishable from a new one, so dropping it loses nothing.
	idle time.Duration

	// shared, when set, holds the device buckets for every replica (shared.go).
	shared        SharedBuckets
	sharedTimeout time.Duration
	onSharedError func(error)
}

type deviceBucket struct {
	lim  *rate.Limiter
	last time.Time
}

// New returns Limits for cfg; now is the clock (time.Now when nil).
func New(cfg Config, now func() time.Time, opts ...Option) *Limits {
	if now == nil {
		now = time.Now
	}
	l := &Limits{cfg: cfg, now: now, devices: make(map[string]*deviceBucket)}
	if cfg.GlobalRate > 0 {
		burst := cfg.GlobalBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(cfg.GlobalRate)))
		}
		l.global = rate.NewLimiter(rate.Limit(cfg.GlobalRate), burst)
	}
	if cfg.MaxInflight > 0 {
		l.inflight = make(chan struct{}, cfg.MaxInflight)
	}
	if cfg.DeviceRate > 0 {
		if l.cfg.DeviceBurst <= 0 {
			l.cfg.DeviceBurst = 1
		}
		l.idle = time.Duration(float64(l.cfg.DeviceBurst) / cfg.DeviceRate * float64(time.Second))
		l.idle = max(l.idle, time.Second)
	}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Global takes a token from the service-wide bucket; *Error (ErrRateLimited) when empty.
func (l *Limits) Global() error {
	if l.global == nil {
		return nil
	}
	return take(l.global, l.now(), LimitGlobal)
}

// Device takes a token from id's bucket; *Error (ErrRateLimited) when empty. Buckets
// idle long enough to be full again are dropped, so memory follows the number of
// recently active devices, not of all devices ever seen. With WithSharedBuckets the
// bucket is the one every replica shares while its store answers.
func (l *Limits) Device(id string) error {
	if l.cfg.DeviceRate <= 0 {
		return nil
	}
	now := l.now()
	if l.shared != nil {
		if answered, err := l.takeShared(id, now); answered {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle {
		l.sweepLocked(now)
	}
	b, ok := l.devices[id]
	if !ok {
		b = &deviceBucket{lim: rate.NewLimiter(rate.Limit(l.cfg.DeviceRate), l.cfg.DeviceBurst)}
		l.devices[id] = b
	}
	b.last = now
	return take(b.lim, now, LimitDevice)
}

func (l *Limits) sweepLocked(now time.Time) {
	for id, b := range l.devices {
		if now.Sub(b.last) >= l.idle {
			delete(l.devices, id)
		}
	}
	l.lastSweep = now
}

// Tracked returns how many device buckets are held.
func (l *Limits) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.devices)
}

// Acquire claims an in-flight slot without waiting; call release when the request is
// done. *Error (ErrOverloaded) when all slots are taken.
func (l *Limits) Acquire() (release func(), err error) {
	if l.inflight == nil {
		return func() {}, nil
	}
	select {
	case l.inflight <- struct{}{}:
		return func() { <-l.inflight }, nil
	default:
		return nil, &Error{Limit: LimitInflight, Wait: time.Second, err: ErrOverloaded}
	}
}

func take(lim *rate.Limiter, now time.Time, limit string) error {
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return &Error{Limit: limit, Wait: time.Second, err: ErrRateLimited}
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return &Error{Limit: limit, Wait: d, err: ErrRateLimited}
	}
	return nil
}
