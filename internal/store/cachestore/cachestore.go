// Package cachestore is a caching decorator for any store.Store. Every GET /token
// looks up a device and its hub; without a cache each lookup would be a Vault read.
// With it, steady state costs a backend read per device per TTL, concurrent misses
// for one key share a single read, and a backend outage is absorbed: devices whose
// records are cached keep being served, everyone else is refused at once with an
// error wrapping store.ErrUnavailable instead of waiting on a dead backend.
//
// What is cached: GetDevice and GetHub results for Options.TTL, and GetDevice's
// ErrNotFound for Options.NegativeTTL, so a flood of unknown device IDs cannot reach
// the backend. ListHubs, ListDevices and GetSetting pass through uncached: they serve
// operators and bootstrap, not the token path, and must see current data.
//
// Writes (CreateHub, DeleteHub, CreateDevice, UpdateDevice, DeleteDevice, PutSetting)
// pass through and then invalidate the keys they touch, so this replica reads its own
// writes at once. Other replicas, each with a cache of its own, see a change only when
// their entry expires: with several replicas a disabled or deleted device can keep
// getting tokens from another replica for up to TTL (plus StaleIfError while the
// backend is down). Keep TTL short where that matters, or set Options.Disabled to
// make the Store a plain pass-through.
//
// While the backend is unavailable (an error wrapping store.ErrUnavailable, or
// context.DeadlineExceeded) a circuit breaker opens after the first failure. Cached
// entries keep being served, even past their TTL for up to StaleIfError; misses fail
// fast with ErrCircuitOpen, except one probe at a time after a backoff that starts at
// 250 ms and doubles up to 5 s. The first successful probe closes the breaker.
// RetryAfter says how long until the next probe, for a Retry-After header.
//
// Records returned by GetDevice never alias the cache or each other: Modules and
// Auth.Secret are copied on the way out, two small allocations per hit.
package cachestore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Defaults for the zero values of Options.
const (
	// DefaultTTL is how long an entry is served without asking the backend.
	DefaultTTL = 60 * time.Second
	// DefaultMaxEntries bounds the device table: room for a 100,000-device fleet.
	DefaultMaxEntries = 100_000
	// DefaultStaleIfError is how long past its TTL an entry may be served during an outage.
	DefaultStaleIfError = 15 * time.Minute
	// DefaultNegativeTTL is how long a device's ErrNotFound is remembered.
	DefaultNegativeTTL = 5 * time.Second
)

// maxReadTime bounds every backend read the cache starts, whatever its caller's
// context says: a hung backend must still produce a failure that opens the breaker,
// and a probe that never returns would otherwise keep it open forever.
const maxReadTime = 10 * time.Second

// ErrCircuitOpen is returned (wrapped) by GetDevice and GetHub when a miss is refused
// without asking the backend because the breaker is open. It wraps
// store.ErrUnavailable, so callers that check for that need nothing else.
var ErrCircuitOpen = fmt.Errorf("cachestore: backend failing, lookup refused until the next probe: %w", store.ErrUnavailable)

// Options configures a Store. The zero value gives the defaults above.
type Options struct {
	// TTL is how long a fetched device or hub is served without asking the backend
	// again; zero means DefaultTTL. It is also how long a change made through another
	// replica, or in the backend directly, can go unnoticed here.
	TTL time.Duration
	// MaxEntries bounds the cached devices, not-found entries included; zero means
	// DefaultMaxEntries. The least recently used are evicted first. Hubs, a handful
	// per deployment, are kept in a separate table with the same bound.
	MaxEntries int
	// StaleIfError is how long past its TTL an entry may still be served while the
	// backend is unavailable; zero means DefaultStaleIfError, negative turns stale
	// serving off.
	StaleIfError time.Duration
	// NegativeTTL is how long GetDevice remembers that a device does not exist; zero
	// means DefaultNegativeTTL, negative turns negative caching off. Not-found entries
	// are never served stale: during an outage an unknown device gets ErrUnavailable.
	NegativeTTL time.Duration
	// Now is the clock for expiry and for the breaker's backoff; nil means time.Now.
	Now func() time.Time
	// Disabled turns the Store into a pass-through: no caching, no breaker, every
	// call goes to the backend (BackendReads still counts lookups).
	Disabled bool
}

// Stats are counters since New, for metrics and for benchmarks that report backend
// reads per token.
type Stats struct {
	// Hits counts lookups answered from a fresh entry, not-found entries included.
	Hits uint64
	// Misses counts lookups that found no fresh entry.
	Misses uint64
	// BackendReads counts GetDevice and GetHub calls made to the backend.
	BackendReads uint64
	// StaleServed counts misses answered with an expired entry because the backend
	// was unavailable.
	StaleServed uint64
	// FastFailures counts misses refused with ErrCircuitOpen without a backend call.
	FastFailures uint64
}

// Store is a store.Store that caches another one. It is safe for concurrent use.
type Store struct {
	next     store.Store
	now      func() time.Time
	disabled bool
	breaker  breaker
	devices  *table[domain.Device]
	hubs     *table[domain.Hub]

	misses       atomic.Uint64
	backendReads atomic.Uint64
	staleServed  atomic.Uint64
	fastFailures atomic.Uint64
}

var _ store.Store = (*Store)(nil)

// New returns a Store caching next. The Store takes ownership of next: Close closes
// it. It fails if next is nil or TTL or MaxEntries is negative.
func New(next store.Store, opts Options) (*Store, error) {
	if next == nil {
		return nil, errors.New("cachestore: no backend store")
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("cachestore: TTL is %s, want >= 0", opts.TTL)
	}
	if opts.MaxEntries < 0 {
		return nil, fmt.Errorf("cachestore: MaxEntries is %d, want >= 0", opts.MaxEntries)
	}
	ttl := orDefault(opts.TTL, DefaultTTL)
	stale := max(orDefault(opts.StaleIfError, DefaultStaleIfError), 0)
	negTTL := max(orDefault(opts.NegativeTTL, DefaultNegativeTTL), 0)
	maxEntries := orDefault(opts.MaxEntries, DefaultMaxEntries)
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	s := &Store{next: next, now: now, disabled: opts.Disabled}
	s.devices = &table[domain.Device]{
		s: s, what: "device", cache: newLRU[domain.Device](maxEntries),
		read: next.GetDevice, clone: func(d *domain.Device) domain.Device { return d.Clone() },
		ttl: int64(ttl), stale: int64(stale), negTTL: int64(negTTL),
	}
	s.hubs = &table[domain.Hub]{
		s: s, what: "hub", cache: newLRU[domain.Hub](maxEntries),
		read: next.GetHub, clone: func(h *domain.Hub) domain.Hub { return h.Clone() },
		// Hub lookups only follow a found device, so unknown names are not a flood
		// worth remembering.
		ttl: int64(ttl), stale: int64(stale),
	}
	return s, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Stats returns the counters so far.
func (s *Store) Stats() Stats {
	return Stats{
		Hits:         s.devices.cache.hits() + s.hubs.cache.hits(),
		Misses:       s.misses.Load(),
		BackendReads: s.backendReads.Load(),
		StaleServed:  s.staleServed.Load(),
		FastFailures: s.fastFailures.Load(),
	}
}

// Len returns the number of cached entries, devices and hubs, not-found entries and
// expired ones not yet evicted included.
func (s *Store) Len() int {
	return s.devices.cache.len() + s.hubs.cache.len()
}

// circuitOpenError is ErrCircuitOpen with the time until the breaker's next probe, so
// the refused client is told when a retry can succeed (RetryAfter, for the API's
// Retry-After header).
type circuitOpenError struct {
	what, key string
	wait      time.Duration
}

func (e *circuitOpenError) Error() string {
	return fmt.Sprintf("get %s %q: %v", e.what, e.key, ErrCircuitOpen)
}

func (e *circuitOpenError) Unwrap() error { return ErrCircuitOpen }

// RetryAfter is the wait in whole seconds, rounded up and at least 1.
func (e *circuitOpenError) RetryAfter() int {
	return max(1, int((e.wait+time.Second-1)/time.Second))
}

// RetryAfter returns how long a client refused with ErrCircuitOpen should wait before
// trying again: the time until the breaker's next probe, a short interval while a
// probe is due or in flight, and zero while the backend is healthy.
func (s *Store) RetryAfter() time.Duration {
	if s.disabled {
		return 0
	}
	return s.breaker.retryAfter(s.now().UnixNano())
}

// GetDevice returns a device, from the cache when it holds a fresh entry;
// store.ErrNotFound if absent, an error wrapping store.ErrUnavailable (ErrCircuitOpen
// when refused without a backend call) if the backend is down and no entry may be
// served. The record shares no memory with the cache.
func (s *Store) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	if s.disabled {
		s.backendReads.Add(1)
		return s.next.GetDevice(ctx, id)
	}
	e, err := s.devices.get(ctx, id)
	if err != nil {
		return domain.Device{}, err
	}
	return e.val.Clone(), nil
}

// GetHub returns a hub, from the cache when it holds a fresh entry; store.ErrNotFound
// if absent, an error wrapping store.ErrUnavailable if the backend is down and no
// entry may be served.
func (s *Store) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	if s.disabled {
		s.backendReads.Add(1)
		return s.next.GetHub(ctx, name)
	}
	e, err := s.hubs.get(ctx, name)
	if err != nil {
		return domain.Hub{}, err
	}
	return e.val, nil
}

// CreateHub stores a new hub in the backend; store.ErrExists if the name is taken.
func (s *Store) CreateHub(ctx context.Context, h domain.Hub) error {
	err := s.next.CreateHub(ctx, h)
	s.hubs.invalidate(h.Name)
	return err
}

// ListHubs returns all hubs from the backend, uncached.
func (s *Store) ListHubs(ctx context.Context) ([]domain.Hub, error) {
	return s.next.ListHubs(ctx)
}

// DeleteHub removes a hub from the backend and the cache; store.ErrNotFound if absent,
// store.ErrConflict while devices still use it.
func (s *Store) DeleteHub(ctx context.Context, name string) error {
	err := s.next.DeleteHub(ctx, name)
	s.hubs.invalidate(name)
	return err
}

// CreateDevice stores a new device in the backend and forgets a cached not-found for
// its ID; store.ErrExists if the ID is taken, store.ErrNotFound if its hub is absent.
func (s *Store) CreateDevice(ctx context.Context, d domain.Device) error {
	err := s.next.CreateDevice(ctx, d)
	s.devices.invalidate(d.ID)
	return err
}

// ListDevices returns a page of devices from the backend, uncached.
func (s *Store) ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error) {
	return s.next.ListDevices(ctx, cursor, limit)
}

// UpdateDevice applies fn in the backend and drops the cached entry, so the next
// GetDevice reads the new record; store.ErrNotFound if absent, fn's error unchanged.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	d, err := s.next.UpdateDevice(ctx, id, fn)
	// Dropped even on error: a write that timed out may still have been applied, and
	// serving the old record of a device being disabled is the worse mistake.
	s.devices.invalidate(id)
	return d, err
}

// DeleteDevice removes a device from the backend and the cache; store.ErrNotFound if
// absent.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	err := s.next.DeleteDevice(ctx, id)
	s.devices.invalidate(id)
	return err
}

// GetSetting returns a setting from the backend, uncached.
func (s *Store) GetSetting(ctx context.Context, name string) ([]byte, error) {
	return s.next.GetSetting(ctx, name)
}

// PutSetting stores a setting in the backend. Settings are not cached, so there is
// nothing to invalidate.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	return s.next.PutSetting(ctx, name, value)
}

// CreateSetting creates a setting in the backend (settings are not cached).
func (s *Store) CreateSetting(ctx context.Context, name string, value []byte) error {
	return s.next.CreateSetting(ctx, name, value)
}

// Close drops every cached record, so no key material outlives the Store in its
// memory, and closes the backend.
func (s *Store) Close() error {
	s.devices.cache.purge()
	s.hubs.cache.purge()
	return s.next.Close()
}

// unavailable reports whether err means the backend could not answer, as opposed to
// an answer such as ErrNotFound.
func unavailable(err error) bool {
	return err != nil && (errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded))
}
