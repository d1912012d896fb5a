package metrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
)

// Store is a store.Store that times every call and counts failures. Methods it does
// not name pass straight through to the embedded store.
type Store struct {
	store.Store
	m *Metrics
}

var _ store.Store = (*Store)(nil)

// InstrumentStore wraps s so its calls are observed.
func (m *Metrics) InstrumentStore(s store.Store) *Store {
	return &Store{Store: s, m: m}
}

// observe records one call. Not-found, exists and conflict are answers, not failures.
func (s *Store) observe(op string, start time.Time, err error) {
	s.m.storeChildren.get(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrExists) && !errors.Is(err, store.ErrConflict) {
		s.m.storeErrors.WithLabelValues(op).Inc()
	}
}

// CreateHub implements store.Store.
func (s *Store) CreateHub(ctx context.Context, h domain.Hub) error {
	start := time.Now()
	err := s.Store.CreateHub(ctx, h)
	s.observe("create_hub", start, err)
	return err
}

// GetHub implements store.Store.
func (s *Store) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	start := time.Now()
	h, err := s.Store.GetHub(ctx, name)
	s.observe("get_hub", start, err)
	return h, err
}

// ListHubs implements store.Store.
func (s *Store) ListHubs(ctx context.Context) ([]domain.Hub, error) {
	start := time.Now()
	hs, err := s.Store.ListHubs(ctx)
	s.observe("list_hubs", start, err)
	return hs, err
}

// DeleteHub implements store.Store.
func (s *Store) DeleteHub(ctx context.Context, name string) error {
	start := time.Now()
	err := s.Store.DeleteHub(ctx, name)
	s.observe("delete_hub", start, err)
	return err
}

// CreateDevice implements store.Store.
func (s *Store) CreateDevice(ctx context.Context, d domain.Device) error {
	start := time.Now()
	err := s.Store.CreateDevice(ctx, d)
	s.observe("create_device", start, err)
	return err
}

// GetDevice implements store.Store.
func (s *Store) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	start := time.Now()
	d, err := s.Store.GetDevice(ctx, id)
	s.observe("get_device", start, err)
	return d, err
}

// ListDevices implements store.Store.
func (s *Store) ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error) {
	start := time.Now()
	p, err := s.Store.ListDevices(ctx, cursor, limit)
	s.observe("list_devices", start, err)
	return p, err
}

// UpdateDevice implements store.Store.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	start := time.Now()
	d, err := s.Store.UpdateDevice(ctx, id, fn)
	s.observe("update_device", start, err)
	return d, err
}

// DeleteDevice implements store.Store.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	start := time.Now()
	err := s.Store.DeleteDevice(ctx, id)
	s.observe("delete_device", start, err)
	return err
}

// GetSetting implements store.Store.
func (s *Store) GetSetting(ctx context.Context, name string) ([]byte, error) {
	start := time.Now()
	v, err := s.Store.GetSetting(ctx, name)
	s.observe("get_setting", start, err)
	return v, err
}

// PutSetting implements store.Store.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	start := time.Now()
	err := s.Store.PutSetting(ctx, name, value)
	s.observe("put_setting", start, err)
	return err
}

// CreateSetting implements store.Store.
func (s *Store) CreateSetting(ctx context.Context, name string, value []byte) error {
	start := time.Now()
	err := s.Store.CreateSetting(ctx, name, value)
	s.observe("create_setting", start, err)
	return err
}

// CacheStats is what the cache collector reads.
type CacheStats interface {
	Stats() cachestore.Stats
}

// RegisterCache exposes a key cache's counters, read at scrape time.
func (m *Metrics) RegisterCache(c CacheStats) {
	type st = cachestore.Stats
	m.reg.MustRegister(snapshotCollector[st]{stats: c.Stats, values: []snapshotValue[st]{
		counterOf("key_cache_hits_total", "Key cache lookups answered from a fresh entry.", func(s st) float64 { return float64(s.Hits) }),
		counterOf("key_cache_misses_total", "Key cache lookups that found no fresh entry.", func(s st) float64 { return float64(s.Misses) }),
		counterOf("key_cache_backend_reads_total", "Device and hub reads the key cache made to the backend.", func(s st) float64 { return float64(s.BackendReads) }),
		counterOf("key_cache_stale_served_total", "Misses answered with an expired entry while the backend was unavailable.", func(s st) float64 { return float64(s.StaleServed) }),
		counterOf("key_cache_fast_failures_total", "Misses refused without a backend call while the circuit was open.", func(s st) float64 { return float64(s.FastFailures) }),
	}})
}

// Check passes the wrapped store's consistency check through (untimed: it is an
// operator's walk, not a request-path call). It returns an error wrapping
// errors.ErrUnsupported when the wrapped store has none.
func (s *Store) Check(ctx context.Context) (store.Report, error) {
	c, ok := s.Store.(interface {
		Check(ctx context.Context) (store.Report, error)
	})
	if !ok {
		return store.Report{}, fmt.Errorf("check: the store (%T) has no consistency check: %w", s.Store, errors.ErrUnsupported)
	}
	return c.Check(ctx)
}

// ListChildren passes the wrapped store's parent index through, timed as
// "list_children". It returns an error wrapping errors.ErrUnsupported when the wrapped
// store has none, so the caller falls back to a scan.
func (s *Store) ListChildren(ctx context.Context, gateway, cursor string, limit int) (store.Page, error) {
	cl, ok := s.Store.(store.ChildLister)
	if !ok {
		return store.Page{}, fmt.Errorf("list children: the store (%T) has no parent index: %w", s.Store, errors.ErrUnsupported)
	}
	start := time.Now()
	p, err := cl.ListChildren(ctx, gateway, cursor, limit)
	s.observe("list_children", start, err)
	return p, err
}
