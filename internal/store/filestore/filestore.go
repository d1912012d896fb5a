// Package filestore is the embedded default store.Store: a single local file holding an
// append-only log of AES-256-GCM encrypted frames. Opening replays the log into memory;
// every change is appended and fsynced before it is applied or acknowledged; the log is
// rewritten as a compact snapshot once it is mostly superseded records.
//
// The file is Linux-oriented (flock, directory fsync) and is meant for one process at a
// time; a second Open of the same file fails with ErrLocked.
package filestore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Errors returned (wrapped) by Open and the Store methods, besides the store sentinels.
var (
	// ErrWrongKey means the file is intact but was written with a different master key.
	ErrWrongKey = errors.New("filestore: wrong master key for this file")
	// ErrCorrupt means the file is damaged somewhere before its final frame, so opening it
	// would silently lose acknowledged changes; restore it from a backup.
	ErrCorrupt = errors.New("filestore: file is corrupt")
	// ErrLocked means another Store, in this process or another, has the file open.
	ErrLocked = errors.New("filestore: file is in use by another process")
	// ErrClosed means the Store has been closed.
	ErrClosed = errors.New("filestore: store is closed")
)

// KeySize is the length of the master key in bytes (AES-256).
const KeySize = 32

const (
	defaultCompactMinSize = 1 << 20
	// DefaultPageSize is the page size ListDevices uses when asked for limit <= 0.
	DefaultPageSize = 100
)

// Option adjusts how Open sets up a Store.
type Option func(*options)

type options struct {
	logger         *slog.Logger
	compactMinSize int64
}

// WithLogger sets where recovery and compaction events are logged; nil means slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithCompactMinSize sets how large the file must be before it is compacted
// automatically (default 1 MiB), so a small store is not rewritten for a few dead records.
func WithCompactMinSize(n int64) Option {
	return func(o *options) { o.compactMinSize = n }
}

// Store is a store.Store kept in one encrypted file. It is safe for concurrent use.
// Reads are served from memory and never wait for the disk; writes are serialised,
// and each is on disk (fsynced) before it becomes visible or returns.
type Store struct {
	path           string
	master         []byte
	logger         *slog.Logger
	compactMinSize int64
	// fault, when set by tests, can fail the write, sync and truncate steps of an append.
	fault func(stage string) error

	// writeMu serialises mutations, compaction and Close, and is held across the fsync:
	// a change is validated and placed in the log with no other writer in between. It
	// guards the fields below; st may also be read under it, since only its holder
	// changes st.
	writeMu        sync.Mutex
	f              *os.File
	aead           cipher.AEAD
	size           int64 // where the next frame goes
	logOps         int   // records in the log, live or superseded
	compactRetryAt int64 // after a failed compaction, the size at which to try again
	// broken is set when the file may hold a frame memory does not reflect; writes are
	// refused until a Compact rewrites the file from memory.
	broken error

	// mu is taken for writing only to apply a change that is already durable, so
	// readers wait for memory updates, never for an fsync.
	mu     sync.RWMutex
	closed bool
	st     *state
}

var _ store.Store = (*Store)(nil)

// Open opens the store file at path, creating it (and its directory, mode 0700) if
// needed. masterKey must be KeySize bytes. A torn final frame left by a crash is cut
// off; damage anywhere else fails with ErrCorrupt, a different key with ErrWrongKey,
// and a file another Store holds with ErrLocked.
func Open(path string, masterKey []byte, opts ...Option) (*Store, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("open store %s: master key is %d bytes, want %d", path, len(masterKey), KeySize)
	}
	o := options{compactMinSize: defaultCompactMinSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	f, err := openLocked(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		path:           path,
		master:         bytes.Clone(masterKey),
		logger:         o.logger,
		compactMinSize: o.compactMinSize,
		f:              f,
	}
	if err := s.load(); err != nil {
		s.f.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// load fills memory from the locked file, initialising an empty one.
func (s *Store) load() error {
	// Only a compaction that crashed before its rename leaves this, and we hold the lock.
	if err := os.Remove(s.tmpPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		// A new file gets its header through the compaction path, so it appears at path
		// atomically and a crash can never leave a half-written header behind.
		s.st = newState()
		return s.compactLocked()
	}

	r, err := replay(s.f, fi.Size(), s.master)
	if err != nil {
		return err
	}
	s.st, s.aead, s.size, s.logOps = r.st, r.aead, r.end, r.ops
	if r.end < fi.Size() {
		if err := s.f.Truncate(r.end); err != nil {
			return fmt.Errorf("cut torn final frame: %w", err)
		}
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("cut torn final frame: %w", err)
		}
		s.logger.Warn("filestore: discarded an incomplete final frame, as left by a crash during a write",
			"path", s.path, "offset", r.end, "bytes", fi.Size()-r.end)
	}
	s.maybeCompact()
	return nil
}

// lockWriter takes writeMu for a mutation, or explains why there may be none.
func (s *Store) lockWriter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.writeMu.Lock()
	if s.closed {
		s.writeMu.Unlock()
		return ErrClosed
	}
	if s.broken != nil {
		s.writeMu.Unlock()
		return s.broken
	}
	return nil
}

// lockReader takes mu for reading, or explains why there may be no read.
func (s *Store) lockReader(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// commit makes o durable, then visible. The caller holds writeMu and has done the
// checks that give the caller-facing errors; validate runs again as the last word,
// because a frame replay would reject must never reach the file.
func (s *Store) commit(o op) error {
	if err := s.st.validate(&o); err != nil {
		return err
	}
	enc, err := encodeOp(&o)
	if err != nil {
		return err
	}
	frame, err := sealFrame(s.aead, s.size, joinBatch([][]byte{enc}))
	if err != nil {
		return err
	}
	if err := s.appendFrame(frame); err != nil {
		return err
	}
	s.mu.Lock()
	s.st.apply(&o, true)
	s.mu.Unlock()
	s.logOps++
	s.maybeCompact()
	return nil
}

// Close releases the file and its lock. Every acknowledged change is already on disk,
// so there is nothing to flush. Further calls return ErrClosed; Close itself may be
// called again and returns nil.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return nil
	}
	var errs []error
	if s.broken != nil {
		// The file may still hold a change its caller was told failed; rewriting the file
		// from memory is the only way to stop the next Open bringing it back.
		if err := s.compactLocked(); err != nil {
			errs = append(errs, fmt.Errorf("rewrite after failed write: %w", err))
		}
	}
	s.mu.Lock()
	s.closed = true
	s.st = nil
	s.mu.Unlock()
	clear(s.master)
	errs = append(errs, s.f.Close())
	s.f = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// CreateHub stores a new hub; store.ErrExists if the name is taken.
func (s *Store) CreateHub(ctx context.Context, h domain.Hub) error {
	if err := s.lockWriter(ctx); err != nil {
		return fmt.Errorf("create hub %q: %w", h.Name, err)
	}
	defer s.writeMu.Unlock()
	if _, ok := s.st.hubs[h.Name]; ok {
		return fmt.Errorf("create hub %q: %w", h.Name, store.ErrExists)
	}
	if err := s.commit(op{kind: opPutHub, hub: &h}); err != nil {
		return fmt.Errorf("create hub %q: %w", h.Name, err)
	}
	return nil
}

// GetHub returns a hub; store.ErrNotFound if absent.
func (s *Store) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	if err := s.lockReader(ctx); err != nil {
		return domain.Hub{}, fmt.Errorf("get hub %q: %w", name, err)
	}
	defer s.mu.RUnlock()
	h, ok := s.st.hubs[name]
	if !ok {
		return domain.Hub{}, fmt.Errorf("get hub %q: %w", name, store.ErrNotFound)
	}
	return h.Clone(), nil
}

// ListHubs returns all hubs ordered by name.
func (s *Store) ListHubs(ctx context.Context) ([]domain.Hub, error) {
	if err := s.lockReader(ctx); err != nil {
		return nil, fmt.Errorf("list hubs: %w", err)
	}
	defer s.mu.RUnlock()
	// Hubs are few, so sorting per call is cheaper than keeping another index.
	names := slices.Sorted(maps.Keys(s.st.hubs))
	hubs := make([]domain.Hub, len(names))
	for i, name := range names {
		hubs[i] = s.st.hubs[name].Clone()
	}
	return hubs, nil
}

// DeleteHub removes a hub; store.ErrNotFound if absent, store.ErrConflict while
// devices still use it.
func (s *Store) DeleteHub(ctx context.Context, name string) error {
	if err := s.lockWriter(ctx); err != nil {
		return fmt.Errorf("delete hub %q: %w", name, err)
	}
	defer s.writeMu.Unlock()
	if err := s.commit(op{kind: opDeleteHub, name: name}); err != nil {
		return fmt.Errorf("delete hub %q: %w", name, err)
	}
	return nil
}

// CreateDevice stores a copy of d; store.ErrExists if the ID is taken,
// store.ErrNotFound if its hub is absent.
func (s *Store) CreateDevice(ctx context.Context, d domain.Device) error {
	if err := s.lockWriter(ctx); err != nil {
		return fmt.Errorf("create device %q: %w", d.ID, err)
	}
	defer s.writeMu.Unlock()
	if _, ok := s.st.devices[d.ID]; ok {
		return fmt.Errorf("create device %q: %w", d.ID, store.ErrExists)
	}
	d = cloneDevice(d)
	if err := s.commit(op{kind: opPutDevice, device: &d}); err != nil {
		return fmt.Errorf("create device %q: %w", d.ID, err)
	}
	return nil
}

// GetDevice returns a copy of a device; store.ErrNotFound if absent.
func (s *Store) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	if err := s.lockReader(ctx); err != nil {
		return domain.Device{}, fmt.Errorf("get device %q: %w", id, err)
	}
	defer s.mu.RUnlock()
	d, ok := s.st.devices[id]
	if !ok {
		return domain.Device{}, fmt.Errorf("get device %q: %w", id, store.ErrNotFound)
	}
	return cloneDevice(d), nil
}

// ListDevices returns up to limit devices (DefaultPageSize if limit <= 0) with IDs
// after cursor in byte order. The cursor is the last ID of the previous page, so
// paging stays correct when that device is deleted in between; Next is empty on the
// page that holds the last device.
func (s *Store) ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error) {
	if err := s.lockReader(ctx); err != nil {
		return store.Page{}, fmt.Errorf("list devices after %q: %w", cursor, err)
	}
	defer s.mu.RUnlock()
	if limit <= 0 {
		limit = DefaultPageSize
	}
	ids := s.st.ids
	start, found := slices.BinarySearch(ids, cursor)
	if found {
		start++
	}
	end := start + min(limit, len(ids)-start)
	page := store.Page{Devices: make([]domain.Device, 0, end-start)}
	for _, id := range ids[start:end] {
		page.Devices = append(page.Devices, cloneDevice(s.st.devices[id]))
	}
	if end < len(ids) {
		page.Next = ids[end-1]
	}
	return page, nil
}

// UpdateDevice calls fn on a copy of the device and stores the result; store.ErrNotFound
// if absent, fn's error unchanged if it fails (and nothing is stored). fn runs with the
// store's write lock held, so it must not call the store. It may move the device to
// another existing hub but not change its ID.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	if err := s.lockWriter(ctx); err != nil {
		return domain.Device{}, fmt.Errorf("update device %q: %w", id, err)
	}
	defer s.writeMu.Unlock()
	cur, ok := s.st.devices[id]
	if !ok {
		return domain.Device{}, fmt.Errorf("update device %q: %w", id, store.ErrNotFound)
	}
	d := cloneDevice(cur)
	if err := fn(&d); err != nil {
		return domain.Device{}, err
	}
	if d.ID != id {
		return domain.Device{}, fmt.Errorf("update device %q: the ID cannot change (to %q)", id, d.ID)
	}
	// fn may have kept a pointer to d, so the stored record gets a copy of its own.
	stored := cloneDevice(d)
	if err := s.commit(op{kind: opPutDevice, device: &stored}); err != nil {
		return domain.Device{}, fmt.Errorf("update device %q: %w", id, err)
	}
	return d, nil
}

// DeleteDevice removes a device; store.ErrNotFound if absent.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	if err := s.lockWriter(ctx); err != nil {
		return fmt.Errorf("delete device %q: %w", id, err)
	}
	defer s.writeMu.Unlock()
	if err := s.commit(op{kind: opDeleteDevice, name: id}); err != nil {
		return fmt.Errorf("delete device %q: %w", id, err)
	}
	return nil
}

// GetSetting returns a copy of a named setting; store.ErrNotFound if unset.
func (s *Store) GetSetting(ctx context.Context, name string) ([]byte, error) {
	if err := s.lockReader(ctx); err != nil {
		return nil, fmt.Errorf("get setting %q: %w", name, err)
	}
	defer s.mu.RUnlock()
	v, ok := s.st.settings[name]
	if !ok {
		return nil, fmt.Errorf("get setting %q: %w", name, store.ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// PutSetting stores a copy of value under name, replacing any previous value.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	if err := s.lockWriter(ctx); err != nil {
		return fmt.Errorf("put setting %q: %w", name, err)
	}
	defer s.writeMu.Unlock()
	if err := s.commit(op{kind: opPutSetting, name: name, value: bytes.Clone(value)}); err != nil {
		return fmt.Errorf("put setting %q: %w", name, err)
	}
	return nil
}

// Ping reports whether the store can serve writes: ErrClosed after Close, or the error
// that stopped writes after a failed write could not be rolled back.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.lockWriter(ctx); err != nil {
		return err
	}
	s.writeMu.Unlock()
	return nil
}
