package cachestore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/testclock"
)

var t0 = time.Date(2025, 6, 1, 8, 30, 0, 0, time.UTC)

// fakeClock is a clock tests move by hand, so TTL, stale and backoff timing is exact
// and no test sleeps.
type fakeClock = testclock.Clock

func newClock() *fakeClock { return testclock.New(t0) }

// failMode is what faultStore's reads do instead of asking the real store.
type failMode int32

const (
	healthy     failMode = iota
	down                 // fail with an error wrapping store.ErrUnavailable, as Vault does when unreachable
	deadline             // fail with context.DeadlineExceeded, as a read that timed out does
	brokenReads          // fail with an error that is neither, e.g. a permission problem
)

var errBroken = errors.New("permission denied")

// faultStore wraps a real store and counts its GetDevice and GetHub calls. The only
// faked thing is an outage, which a file store cannot produce on demand. With hold
// set, reads announce themselves on entered and then wait for hold to close, so tests
// can pile callers onto one read.
type faultStore struct {
	store.Store
	mode       atomic.Int32
	deviceGets atomic.Int64
	hubGets    atomic.Int64

	mu      sync.Mutex
	perID   map[string]int
	hold    chan struct{}
	entered chan string
	// holdLate makes held reads wait after reading the real store rather than
	// before, so a write can land between the read and its return.
	holdLate bool
}

func (f *faultStore) setMode(m failMode) { f.mode.Store(int32(m)) }

// holdReads makes reads block until the returned release is called; entered receives
// the key of every read that reached the backend.
func (f *faultStore) holdReads() (entered <-chan string, release func()) {
	return f.holdReadsAt(false)
}

// holdReadsAfterRead is holdReads with reads that wait after reading the real store.
func (f *faultStore) holdReadsAfterRead() (entered <-chan string, release func()) {
	return f.holdReadsAt(true)
}

func (f *faultStore) holdReadsAt(late bool) (entered <-chan string, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hold := make(chan struct{})
	f.hold, f.entered, f.holdLate = hold, make(chan string, 10_000), late
	var once sync.Once
	return f.entered, func() {
		once.Do(func() {
			f.mu.Lock()
			f.hold = nil
			f.mu.Unlock()
			close(hold)
		})
	}
}

// before counts a read of key, holds it if asked to hold reads early, and returns
// the injected failure, if any. It returns a function to call after the real read.
func (f *faultStore) before(key string) (after func(), err error) {
	f.mu.Lock()
	if f.perID == nil {
		f.perID = map[string]int{}
	}
	f.perID[key]++
	hold, entered, late := f.hold, f.entered, f.holdLate
	f.mu.Unlock()
	wait := func() {
		if hold != nil {
			entered <- key
			<-hold
		}
	}
	after = func() {}
	if late {
		after = wait
	} else {
		wait()
	}
	return after, f.injected(key)
}

func (f *faultStore) injected(key string) error {
	switch failMode(f.mode.Load()) {
	case down:
		return fmt.Errorf("read %q: dial tcp 127.0.0.1:8200: connection refused: %w", key, store.ErrUnavailable)
	case deadline:
		return fmt.Errorf("read %q: %w", key, context.DeadlineExceeded)
	case brokenReads:
		return fmt.Errorf("read %q: %w", key, errBroken)
	}
	return nil
}

func (f *faultStore) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	f.deviceGets.Add(1)
	after, err := f.before(id)
	if err != nil {
		return domain.Device{}, err
	}
	defer after()
	return f.Store.GetDevice(ctx, id)
}

func (f *faultStore) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	f.hubGets.Add(1)
	after, err := f.before("hub/" + name)
	if err != nil {
		return domain.Hub{}, err
	}
	defer after()
	return f.Store.GetHub(ctx, name)
}

// maxPerKey returns the most backend reads any one key had.
func (f *faultStore) maxPerKey() (string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key, n := "", 0
	for k, v := range f.perID {
		if v > n {
			key, n = k, v
		}
	}
	return key, n
}

// mustFileStore opens an empty file store in a temporary directory.
func mustFileStore(tb testing.TB) *filestore.Store {
	tb.Helper()
	key := make([]byte, filestore.KeySize)
	rand.Read(key)
	fs, err := filestore.Open(filepath.Join(tb.TempDir(), "tokensvc.db"), key,
		filestore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		tb.Fatalf("filestore.Open: got error %v, want nil", err)
	}
	return fs
}

// mustNew returns a cache over next, closed (with next) when the test ends.
func mustNew(tb testing.TB, next store.Store, opts cachestore.Options) *cachestore.Store {
	tb.Helper()
	c, err := cachestore.New(next, opts)
	if err != nil {
		tb.Fatalf("New: got error %v, want nil", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// fixture is a cache over a counting, fault-injecting wrapper of a real file store
// that holds one hub and the given devices, with a fake clock.
type fixture struct {
	clock   *fakeClock
	backend *faultStore
	cache   *cachestore.Store
}

func newFixture(tb testing.TB, opts cachestore.Options, deviceIDs ...string) *fixture {
	tb.Helper()
	fs := mustFileStore(tb)
	ctx := tb.Context()
	if err := fs.CreateHub(ctx, hub("hub-a")); err != nil {
		tb.Fatalf("CreateHub: got error %v, want nil", err)
	}
	for _, id := range deviceIDs {
		if err := fs.CreateDevice(ctx, device(id, "hub-a")); err != nil {
			tb.Fatalf("CreateDevice(%q): got error %v, want nil", id, err)
		}
	}
	f := &fixture{clock: newClock(), backend: &faultStore{Store: fs}}
	if opts.Now == nil {
		opts.Now = f.clock.Now
	}
	f.cache = mustNew(tb, f.backend, opts)
	return f
}

// getAsync reads device id through the cache in a goroutine and returns where its
// error arrives: for reads a test holds in the backend.
func (f *fixture) getAsync(ctx context.Context, id string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := f.cache.GetDevice(ctx, id)
		ch <- err
	}()
	return ch
}

func hub(name string) domain.Hub {
	return domain.Hub{
		Name: name, Kind: domain.KindIoTHub, Hostname: name + ".azure-devices.net",
		Mode: domain.SignDeviceKey, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, CreatedAt: t0,
	}
}

func device(id, hub string) domain.Device {
	return domain.Device{
		ID: id, Hub: hub,
		PrimaryKey:   "cHJpbWFyeS0" + id,
		SecondaryKey: "c2Vjb25kYXJ5" + id,
		Modules:      []domain.Module{{ID: "telemetry", PrimaryKey: "bW9kLXA" + id, SecondaryKey: "bW9kLXM" + id}},
		Auth:         domain.Credential{Type: domain.CredHS256, Secret: []byte{0x00, 0xff, 's', 'e', 'c'}},
		CreatedAt:    t0,
		UpdatedAt:    t0,
	}
}

// mustGet reads id through c and fails the test on error.
func mustGet(tb testing.TB, c store.Store, id string) domain.Device {
	tb.Helper()
	d, err := c.GetDevice(tb.Context(), id)
	if err != nil {
		tb.Fatalf("GetDevice(%q): got error %v, want nil", id, err)
	}
	return d
}

// wantReads checks how many GetDevice calls reached the backend so far.
func (f *fixture) wantReads(tb testing.TB, when string, want int64) {
	tb.Helper()
	if got := f.backend.deviceGets.Load(); got != want {
		tb.Errorf("%s: got %d backend GetDevice calls, want %d", when, got, want)
	}
}
