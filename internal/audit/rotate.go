package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// RotatingFile is an append-only file that, before a write would take it past MaxBytes,
// is renamed to path.1 (path.1 to path.2, and so on), keeping Keep old files. It is
// safe for concurrent use.
type RotatingFile struct {
	path     string
	maxBytes int64
	keep     int

	mu   sync.Mutex
	f    *os.File
	size int64
	// retryAt is the size from which a rotation that failed is tried again.
	retryAt       int64
	onRotateError func(error)
}

// OnRotateError sets f to be told of each rotation that failed; the records go on
// to the current file meanwhile.
func (rf *RotatingFile) OnRotateError(f func(error)) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	rf.onRotateError = f
}

// OpenRotating opens (or creates, 0600) path for appending.
func OpenRotating(path string, maxBytes int64, keep int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		return nil, errors.New("audit file max size must be positive")
	}
	if keep < 0 {
		return nil, errors.New("audit files kept must not be negative")
	}
	rf := &RotatingFile{path: path, maxBytes: maxBytes, keep: keep}
	if err := rf.open(); err != nil {
		return nil, err
	}
	return rf, nil
}

func (rf *RotatingFile) open() error {
	f, err := os.OpenFile(rf.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat audit file: %w", err)
	}
	rf.f, rf.size = f, st.Size()
	return nil
}

// Write appends p, rotating first when p would not fit. A single record larger than
// MaxBytes still goes to a file of its own. A rotation that fails loses no record: p
// goes to the current file, past MaxBytes, and rotation is tried again once the file
// has grown by another tenth of MaxBytes (so a lasting failure does not shift the old
// files out one write at a time).
func (rf *RotatingFile) Write(p []byte) (int, error) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.f == nil {
		return 0, fs.ErrClosed
	}
	if rf.size > 0 && rf.size+int64(len(p)) > rf.maxBytes && rf.size >= rf.retryAt {
		if err := rf.rotate(); err != nil {
			rf.retryAt = rf.size + max(rf.maxBytes/10, 1)
			if rf.onRotateError != nil {
				rf.onRotateError(err)
			}
		}
	}
	n, err := rf.f.Write(p)
	rf.size += int64(n)
	return n, err
}

// rotate moves the files aside and opens a new one; the current file stays open, and
// in use, until the new one is.
func (rf *RotatingFile) rotate() error {
	name := func(i int) string { return fmt.Sprintf("%s.%d", rf.path, i) }
	if rf.keep == 0 {
		if err := os.Remove(rf.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate audit file: %w", err)
		}
	} else {
		_ = os.Remove(name(rf.keep))
		for i := rf.keep - 1; i >= 1; i-- {
			if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("rotate audit file: %w", err)
			}
		}
		if err := os.Rename(rf.path, name(1)); err != nil {
			return fmt.Errorf("rotate audit file: %w", err)
		}
	}
	old := rf.f
	if err := rf.open(); err != nil {
		return err // old, now renamed, keeps the records
	}
	rf.retryAt = 0
	if err := old.Close(); err != nil {
		return fmt.Errorf("close rotated audit file: %w", err)
	}
	return nil
}

// Close closes the current file.
func (rf *RotatingFile) Close() error {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.f == nil {
		return nil
	}
	err := rf.f.Close()
	rf.f = nil
	return err
}
