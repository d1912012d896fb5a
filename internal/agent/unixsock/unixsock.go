// Package unixsock opens Unix socket listeners whose file has its mode from the moment
// it appears at its path. A socket bound at its path and chmod-ed afterwards is
// connectable meanwhile by whoever the process umask lets in, and a connection queued
// in that window is accepted once the server starts: for the token socket, a way to
// the token past its mode.
package unixsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Listen replaces any socket at path with a new one of mode: it binds it in a private
// directory next to path (0700: nobody else can reach it there), sets its mode, then
// renames it into place. The directory is a few bytes longer than path, which must fit
// a socket address (108 bytes on Linux) with them. Closing the listener removes the
// socket file.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	_ = os.Remove(path) // a stale socket from a previous run
	dir, err := os.MkdirTemp(filepath.Dir(path), ".s")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) // empty after the rename
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // it is unlinked at path, by Close below
	if err := os.Chmod(tmp, mode); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("move the socket into place: %w", err)
	}
	return &listener{UnixListener: ln, path: path}, nil
}

type listener struct {
	*net.UnixListener
	path string
	once sync.Once
}

// Close stops listening and removes the socket file.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() { _ = os.Remove(l.path) })
	return err
}
