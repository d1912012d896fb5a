// Package filestore is the embedded default store.Store: one local bbolt file (a
// copy-on-write B+tree) whose records are sealed with AES-256-GCM under the master
// key. Reads go to the memory-mapped file, so the heap holds no records and opening
// replays nothing; writes from concurrent callers are committed together, one fsync
// per group, and none is acknowledged before its fsync. A file in the old v1 format
// (an append-only log) is migrated on first Open; see migrate.go.
//
// The file is Linux-oriented (flock, directory fsync) and is meant for one process at a
// time; a second Open of the same file fails with ErrLocked.
package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Errors returned (wrapped) by Open and the Store methods, besides the store sentinels.
var (
	// ErrWrongKey means the file is intact but was written with a different master key.
	ErrWrongKey = errors.New("filestore: wrong master key for this file")
	// ErrCorrupt means the file is damaged; restore it from a backup.
	ErrCorrupt = errors.New("filestore: file is corrupt")
	// ErrLocked means another Store, in this process or another, has the file open.
	ErrLocked = errors.New("filestore: file is in use by another process")
	// ErrClosed means the Store has been closed.
	ErrClosed = errors.New("filestore: store is closed")
)

// KeySize is the length of the master key in bytes (AES-256).
const KeySize = 32

const (
	// DefaultPageSize is the page size ListDevices uses when asked for limit <= 0.
	DefaultPageSize = 100
	// lockTimeout bounds the wait for the file lock: a live holder keeps it for good.
	lockTimeout = 200 * time.Millisecond
)

// Option adjusts how Open sets up a Store.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	deviceCache int
	// fault, when set by tests, can fail a migration step as a crash there would.
	fault func(step string) error
}

// WithLogger sets where migration and recovery events are logged; nil means slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// Store is a store.Store kept in one encrypted bbolt file. It is safe for concurrent use.
type Store struct {
	path   string
	logger *slog.Logger
	sl     *sealer
	// devices and hubs keep decoded records for the token path (devcache.go).
	devices *recCache[domain.Device]
	hubs    *recCache[domain.Hub]

	// mu guards db against Close: every call holds it for reading while it uses db.
	mu     sync.RWMutex
	db     *bolt.DB
	closed bool

	// The group commit (commit.go): writes queue up under qmu, kick wakes the
	// committer goroutine, stop ends it and it closes stopped when it has.
	qmu           sync.Mutex
	queue         []*writeReq
	kick          chan struct{}
	stop, stopped chan struct{}

	// statsMu guards the group commit counters: commits (group transactions) and
	// writes (the calls they carried).
	statsMu         sync.Mutex
	commits, writes int64

	// size is where the file's pages end as of the last commit; Check compares it with
	// the file before it reads through the memory map, since reading a mapped page the
	// file no longer has kills the process (SIGBUS).
	size atomic.Int64
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.ChildLister = (*Store)(nil)
)

// Open opens the store file at path, creating it (and its directory, mode 0700) if
// needed, and migrating it first if it is in the v1 log format. masterKey must be
// KeySize bytes. A different key fails with ErrWrongKey, a damaged file with
// ErrCorrupt, and a file another Store holds with ErrLocked.
func Open(path string, masterKey []byte, opts ...Option) (*Store, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("open store %s: master key is %d bytes, want %d", path, len(masterKey), KeySize)
	}
	o := options{deviceCache: DefaultDeviceCache}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db, sl, err := openFile(path, masterKey, &o)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		path: path, logger: o.logger, sl: sl, db: db,
		devices: newRecCache(o.deviceCache, domain.Device.Clone),
		hubs:    newRecCache(hubCacheSize, domain.Hub.Clone),
		kick:    make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	s.noteSize()
	go s.committer()
	return s, nil
}

// openFile migrates a v1 file if path holds one, then opens the bbolt file.
func openFile(path string, master []byte, o *options) (*bolt.DB, *sealer, error) {
	for attempt := 1; ; attempt++ {
		v1, err := isV1(path)
		if err != nil {
			return nil, nil, err
		}
		if !v1 {
			break
		}
		err = migrate(path, master, o)
		if errors.Is(err, errMigratedMeanwhile) && attempt < 3 {
			continue // path is now the new file, locked by whoever migrated it
		}
		if err != nil {
			return nil, nil, fmt.Errorf("migrate v1 file: %w", err)
		}
		break
	}
	db, err := openBolt(path)
	if err != nil {
		return nil, nil, err
	}
	sl, err := verifyFile(db, master)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, sl, nil
}

// openBolt opens path with bbolt, mapping its errors to this package's.
func openBolt(path string) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // faults in bbolt's map: see recoverCorrupt
	defer func() {
		// bbolt trusts the pages it maps; a damaged file must be an error, not a crash.
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	if err := checkLength(path); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if err == nil && created {
		// bbolt syncs the new file, never its directory: without this, a power loss
		// could forget the file itself, with every write acknowledged into it.
		if err := syncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
	}
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, ErrLocked
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	case err != nil:
		return nil, err
	}
	return db, nil
}

// Close releases the file and its lock, after any write in progress, and drops the
// decoded records kept in memory. Every acknowledged change is already on disk.
// Further calls return ErrClosed; Close itself may be called again and returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopCommitter()
	s.devices.purge()
	s.hubs.purge()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Ping reports whether the store can serve: ErrClosed after Close.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("%w: meta bucket is missing", ErrCorrupt)
		}
		return nil
	})
}

// enter takes the read side of mu for one call, or explains why there may be none.
func (s *Store) enter(ctx context.Context) error {
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

// view runs fn in a read transaction. A panic from bbolt on a damaged page becomes
// ErrCorrupt.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // faults in bbolt's map: see recoverCorrupt
	defer recoverCorrupt(&err)
	return s.db.View(fn)
}

// batch runs fn in a write transaction shared with concurrent callers (one commit
// for all of them; see commit.go) and returns once that transaction is durable. fn
// must check everything that can refuse it before it writes, and return those
// refusals marked with refuse.
func (s *Store) batch(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.enqueue(fn)
}

// update runs fn in a write transaction of its own, exactly once.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.withTx(fn)
}

// recoverCorrupt turns a panic from bbolt on a damaged file into ErrCorrupt. Its
// callers also make memory faults panics for their call (debug.SetPanicOnFault, put
// back as it was on return): bbolt following a damaged page pointer past its map
// reads unmapped memory, which otherwise ends the process whatever recovers wait.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	}
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// isV1 reports whether path holds a file in the v1 log format (false if it is absent).
func isV1(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, len(magic))
	n, _ := f.ReadAt(head, 0)
	return bytes.Equal(head[:n], []byte(magic)) && n == len(magic), nil
}
