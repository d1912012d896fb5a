// Package persist keeps the last good token on disk so that a device that reboots while
// the token service is unreachable can go on with a token that is still valid. The file
// is written atomically (temporary file, fsync, rename, fsync of the directory) with
// mode 0600: it holds a live credential.
package persist

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// ErrNone means no token has been saved yet.
var ErrNone = errors.New("no saved token")

// File is a token file.
type File struct {
	path string
}

// New returns the token file at path. Its directory is created 0700 if missing.
func New(path string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return &File{path: path}, nil
}

// Path is where the token is kept.
func (f *File) Path() string { return f.path }

// Load returns the saved token, ErrNone if there is none. A file readable by group or
// others is refused: someone changed it, and its token may have leaked.
func (f *File) Load() (token.Token, error) {
	fi, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return token.Token{}, ErrNone
	}
	if err != nil {
		return token.Token{}, fmt.Errorf("saved token: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return token.Token{}, fmt.Errorf("saved token %s has mode %v, want 0600", f.path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return token.Token{}, fmt.Errorf("saved token: %w", err)
	}
	var t token.Token
	if err := json.Unmarshal(b, &t); err != nil {
		return token.Token{}, fmt.Errorf("saved token %s does not decode", f.path)
	}
	return t, nil
}

// Save replaces the saved token with t atomically.
func (f *File) Save(t token.Token) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode token: %w", err)
	}
	return WriteAtomic(f.path, b, 0o600)
}

// WriteAtomic replaces path with data: readers see the old or the new contents, never
// a mix, also across a crash.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, os.Rename)
}

// WriteNew creates path with data as WriteAtomic writes it, but never replaces a file
// that is there: then it fails with an error wrapping fs.ErrExist, and the file is the
// one another writer created first. On a file system without hard links (FAT) it
// replaces, as WriteAtomic does.
func WriteNew(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, func(tmp, path string) error {
		err := os.Link(tmp, path)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return os.Rename(tmp, path)
		}
		return err
	})
}

// write writes data to a temporary file beside path and puts it in place with put
// (os.Rename replaces, os.Link does not).
func write(path string, data []byte, mode os.FileMode, put func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // after the rename a no-op, after a link the temporary name only
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := put(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable; not all file systems support it
		d.Close()
	}
	return nil
}
