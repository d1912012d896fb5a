package filestore

import (
	"context"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the store file to w, as of one moment: a file
// that Open accepts with the same master key, its values sealed as on disk (the master
// key itself is not in it). size is called first with the copy's length, so a caller
// can announce it (an HTTP Content-Length) and a reader can tell a cut-off copy.
//
// It reads one snapshot in a read transaction while writes go on; a write that must
// grow the file's mapping waits until the copy is done, so a large copy can hold up
// imports that grow the store. It returns ErrClosed after Close.
func (s *Store) Backup(ctx context.Context, w io.Writer, size func(int64)) (n int64, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}
