package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// storeBackup saves POST /store/backup's copy of the embedded store to FILE (mode
// 0600): written beside it under a temporary name, checked against the announced
// length, synced, then renamed into place, so FILE is never a partial copy. It goes
// through the raw client (no overall timeout: a large store takes its time).
func (c *cli) storeBackup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("store backup", flag.ContinueOnError)
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	path := pos[0]
	resp, err := c.http.BackupStore(ctx)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := streamError(resp); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tokenctl-backup-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("the copy ended after %d of %d bytes", n, resp.ContentLength)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("store backup: %w", err)
	}
	fmt.Fprintf(c.stderr, "tokenctl: %d bytes written to %s (sealed with the service's master key, which is not in it)\n", n, path)
	return nil
}
