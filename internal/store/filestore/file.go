package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// The file under the store: taking its lock, appending a frame durably (or cutting it
// off again), and rewriting it as a snapshot.

func (s *Store) tmpPath() string { return s.path + ".tmp" }

// openLocked opens path and takes an exclusive flock on it.
func openLocked(path string) (*os.File, error) {
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := flock(f); err != nil {
			f.Close()
			return nil, err
		}
		// The holder we waited on may have compacted, renaming a new file over path
		// between our open and our flock; then we hold a lock on an unlinked file.
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		pi, err := os.Stat(path)
		if err == nil && os.SameFile(fi, pi) {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: the file keeps being replaced", ErrLocked)
}

func flock(f *os.File) error {
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
	if lerr != nil {
		return fmt.Errorf("lock file: %w", lerr)
	}
	return nil
}

func (s *Store) injected(stage string) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(stage)
}

// appendFrame writes frame at the end of the log and fsyncs it.
func (s *Store) appendFrame(frame []byte) error {
	off := s.size
	err := s.injected("write")
	if err == nil {
		_, err = s.f.WriteAt(frame, off)
	}
	if err == nil {
		err = s.injected("sync")
	}
	if err == nil {
		err = s.f.Sync()
	}
	if err == nil {
		s.size += int64(len(frame))
		return nil
	}
	// Cut the file back to the last acknowledged frame. A complete frame left behind
	// would come back to life at the next Open although its caller was told it failed;
	// a partial one would sit in front of every later frame.
	rerr := s.injected("truncate")
	if rerr == nil {
		rerr = s.f.Truncate(off)
	}
	if rerr == nil {
		rerr = s.f.Sync()
	}
	if rerr != nil {
		s.broken = fmt.Errorf("file may hold a change that failed (rollback: %v); writes are refused until Compact or Close rewrites it", rerr)
		s.logger.Error("filestore: could not roll back a failed write", "path", s.path, "err", rerr)
	}
	return fmt.Errorf("write %s: %w", s.path, err)
}

// needCompact reports whether most of the log is superseded records.
func (s *Store) needCompact() bool {
	live := s.st.live()
	return s.size > s.compactMinSize && s.logOps-live > live
}

func (s *Store) maybeCompact() {
	if !s.needCompact() || s.size < s.compactRetryAt {
		return
	}
	if err := s.compactLocked(); err != nil {
		// The change that triggered this is durable already; compaction is retried
		// once the log has grown by another compactMinSize.
		s.compactRetryAt = s.size + s.compactMinSize
		s.logger.Error("filestore: compaction failed", "path", s.path, "err", err)
	}
}

// Compact rewrites the file as a snapshot of the live records, dropping superseded
// ones. It runs automatically when the log is mostly dead records; call it to reclaim
// space at a moment of your choosing, or to recover after a failed write could not be
// rolled back.
func (s *Store) Compact() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return fmt.Errorf("compact: %w", ErrClosed)
	}
	if err := s.compactLocked(); err != nil {
		return fmt.Errorf("compact %s: %w", s.path, err)
	}
	return nil
}

// compactLocked writes a snapshot to the temporary file, fsyncs it and renames it over
// path, so a crash at any point leaves either the old or the new file complete. The
// caller holds writeMu.
func (s *Store) compactLocked() error {
	tmp := s.tmpPath()
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	abandon := func(err error) error {
		tf.Close()
		os.Remove(tmp)
		return err
	}
	// Lock the new file before it appears at path, so no other process can take it
	// between the rename and the release of the old file's lock.
	if err := flock(tf); err != nil {
		return abandon(err)
	}
	aead, size, ops, err := writeSnapshot(tf, s.master, s.st)
	if err != nil {
		return abandon(fmt.Errorf("write snapshot: %w", err))
	}
	if err := tf.Sync(); err != nil {
		return abandon(fmt.Errorf("sync snapshot: %w", err))
	}
	before := s.size
	if err := os.Rename(tmp, s.path); err != nil {
		return abandon(err)
	}
	// From here path names the new file, so it is the only one worth writing to.
	old := s.f
	s.f, s.aead, s.size, s.logOps, s.compactRetryAt = tf, aead, size, ops, 0
	if err := old.Close(); err != nil {
		s.logger.Warn("filestore: closing the replaced file failed", "path", s.path, "err", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		// Until the rename is durable a crash could bring back the old file, which
		// lacks any change written from now on.
		s.broken = fmt.Errorf("compaction not durable (%v); writes are refused until Compact or Close succeeds", err)
		return fmt.Errorf("sync directory: %w", err)
	}
	s.broken = nil
	if before > 0 {
		s.logger.Info("filestore: compacted", "path", s.path, "bytesBefore", before, "bytesAfter", size, "records", ops)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}
