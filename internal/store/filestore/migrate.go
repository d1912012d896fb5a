package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Migration of a v1 file (the append-only log, read by legacy_*.go) to the bbolt
// format, on the first Open that meets one:
//
//  1. lock the v1 file (a v1 process still using it makes Open fail with ErrLocked)
//     and check that path still names it (another Open may have migrated it while
//     this one waited: Open then starts over and meets the new file's lock);
//  2. replay it with the v1 reader — a torn final frame is skipped as v1 did, damage
//     is ErrCorrupt and another key ErrWrongKey, before anything is written;
//  3. write every record into <path>.migrating (a leftover from a crash is removed
//     first) and fsync it;
//  4. hard-link the v1 file as <path>.v1 (the backup; an older one is replaced) and
//     fsync the directory;
//  5. rename <path>.migrating over path and fsync the directory.
//
// Until the rename, path is the untouched v1 file and the next Open migrates again;
// after it, path is the complete new file. The rename is the only step that changes
// what path names, and it is atomic.

// Step names passed to the test fault hook; each is checked just before its step.
const (
	stepLock    = "lock"    // after the v1 file is opened, before it is locked
	stepWrite   = "write"   // after the first records are written to <path>.migrating
	stepSync    = "sync"    // before <path>.migrating is fsynced
	stepLink    = "link"    // before the backup link
	stepRename  = "rename"  // before the rename over path
	stepSyncDir = "syncdir" // after the rename, before the directory fsync
)

// errMigratedMeanwhile means path no longer names the v1 file migrate opened: another
// process migrated it first, and Open must look at path again.
var errMigratedMeanwhile = errors.New("the v1 file was migrated by another process meanwhile")

// migrateTxSize is how many records one transaction of the migration writes.
const migrateTxSize = 10_000

func migratingPath(path string) string { return path + ".migrating" }

// BackupPath returns where Open keeps a v1 file it migrated from path.
func BackupPath(path string) string { return path + ".v1" }

func (o *options) step(name string) error {
	if o.fault == nil {
		return nil
	}
	if err := o.fault(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// migrate converts the v1 file at path in place; see the steps above.
func migrate(path string, master []byte, o *options) error {
	start := time.Now()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close() // releases the lock
	if err := o.step(stepLock); err != nil {
		return err
	}
	if err := lockV1(f); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// Another process may have migrated the file between this one's look at path and
	// its lock: f is then the backup, and path the new file, perhaps already written to.
	// Migrating f again would put its old records over those writes.
	if cur, err := os.Stat(path); err != nil || !os.SameFile(cur, fi) {
		return errMigratedMeanwhile
	}
	r, err := replay(f, fi.Size(), master)
	if err != nil {
		return err
	}
	if r.end < fi.Size() {
		o.logger.Warn("filestore: the v1 file ends in an incomplete frame, as left by a crash during a write; it is not migrated",
			"path", path, "offset", r.end, "bytes", fi.Size()-r.end)
	}
	// A v1 compaction that crashed before its rename leaves this; v1 removed it too.
	if err := os.Remove(path + ".tmp"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp := migratingPath(path)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := writeBolt(tmp, master, r.st, o); err != nil {
		return err
	}
	if err := o.step(stepLink); err != nil {
		return err
	}
	backup := BackupPath(path)
	if err := os.Remove(backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Link(path, backup); err != nil {
		return fmt.Errorf("keep the v1 file as %s: %w", backup, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	if err := o.step(stepRename); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if err := o.step(stepSyncDir); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	o.logger.Info("filestore: migrated the v1 file to the bbolt format", "path", path, "backup", backup,
		"hubs", len(r.st.hubs), "devices", len(r.st.devices), "settings", len(r.st.settings),
		"seconds", time.Since(start).Seconds())
	return nil
}

// lockV1 takes the v1 file's lock as a v1 Store did (flock, not waiting).
func lockV1(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
	}); err != nil {
		return err
	}
	if errors.Is(lerr, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	return lerr
}

// writeBolt writes st into a new bbolt file at path and fsyncs it. Commits skip the
// fsync (nothing is acknowledged until the rename), and one fsync at the end covers
// them all.
func writeBolt(path string, master []byte, st *state, o *options) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	defer db.Close()
	sl, err := initOrVerify(db, master)
	if err != nil {
		return err
	}
	hubs := slices.Sorted(maps.Keys(st.hubs))
	settings := slices.Sorted(maps.Keys(st.settings))
	steps := []struct {
		n   int
		put func(tx *bolt.Tx, i int) error
	}{
		{len(hubs), func(tx *bolt.Tx, i int) error {
			h := st.hubs[hubs[i]]
			return putHub(tx, sl, &h)
		}},
		{len(st.ids), func(tx *bolt.Tx, i int) error {
			d := st.devices[st.ids[i]]
			return putDevice(tx, sl, &d)
		}},
		{len(settings), func(tx *bolt.Tx, i int) error {
			name := []byte(settings[i])
			return tx.Bucket(bucketSettings).Put(name, sl.seal(bucketSettings, name, st.settings[settings[i]]))
		}},
	}
	for _, step := range steps {
		for from := 0; from < step.n; from += migrateTxSize {
			err := db.Update(func(tx *bolt.Tx) error {
				tx.Bucket(bucketDevices).FillPercent = 0.9 // written in ID order
				for i := from; i < min(from+migrateTxSize, step.n); i++ {
					if err := step.put(tx, i); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if err := o.step(stepWrite); err != nil {
				return err
			}
		}
	}
	if err := o.step(stepSync); err != nil {
		return err
	}
	if err := db.Sync(); err != nil {
		return err
	}
	return db.Close()
}

func putHub(tx *bolt.Tx, sl *sealer, h *domain.Hub) error {
	v, err := sl.sealJSON(bucketHubs, []byte(h.Name), recordOfHub(h))
	if err != nil {
		return err
	}
	return tx.Bucket(bucketHubs).Put([]byte(h.Name), v)
}

func putDevice(tx *bolt.Tx, sl *sealer, d *domain.Device) error {
	v, err := sl.sealDevice(d)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketDevices).Put([]byte(d.ID), v); err != nil {
		return err
	}
	return indexDevice(tx, nil, d)
}
