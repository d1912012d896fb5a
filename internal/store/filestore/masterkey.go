package filestore

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreateMasterKey returns the master key kept base64-encoded in the file at path,
// creating the file (mode 0600, its directory 0700) with a new random key if it does
// not exist. An existing file that group or others may access is refused: the key
// decrypts every credential in the store.
func LoadOrCreateMasterKey(path string) ([]byte, error) {
	key, err := loadMasterKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create master key %s: %w", path, err)
	}
	key = make([]byte, KeySize)
	rand.Read(key)
	tmp, err := os.CreateTemp(dir, ".masterkey-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("create master key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.WriteString(tmp, base64.StdEncoding.EncodeToString(key)+"\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("create master key %s: %w", path, err)
	}
	// A link, unlike a rename, never replaces a key another process created meanwhile:
	// two processes each keeping a different key would make one's store unreadable.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadMasterKey(path)
		}
		return nil, fmt.Errorf("create master key %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("create master key %s: %w", path, err)
	}
	return key, nil
}

func loadMasterKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("load master key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("load master key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load master key %s: mode %04o lets group or others access it; chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, fmt.Errorf("load master key %s: %w", path, err)
	}
	key, err := ParseMasterKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("load master key %s: %w", path, err)
	}
	return key, nil
}

// ParseMasterKey decodes a master key given in configuration: standard base64 of
// exactly KeySize bytes, surrounding whitespace ignored. Errors never echo the input.
func ParseMasterKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		// base64's error names only a byte offset, never the data.
		return nil, fmt.Errorf("master key is not valid base64: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("master key decodes to %d bytes, want %d", len(key), KeySize)
	}
	return key, nil
}
