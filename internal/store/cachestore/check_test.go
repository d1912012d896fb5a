package cachestore_test

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// TestCheckPassesThrough: the cache reports its backend's check as it is, problems
// included, and says so when the backend has none.
func TestCheckPassesThrough(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokensvc.db")
	key := make([]byte, filestore.KeySize)
	rand.Read(key)
	fs, err := filestore.Open(path, key, filestore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, fs, cachestore.Options{})
	ctx := t.Context()
	if err := c.CreateHub(ctx, domain.Hub{Name: "h", Kind: domain.KindIoTHub, Mode: domain.SignDeviceKey}); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Check(ctx)
	if err != nil || rep.Err() != nil || rep.Hubs != 1 {
		t.Fatalf("clean backend: got %+v, %v; want 1 hub and no problems", rep, err)
	}
	// The backend's file cut short behind its back: its problem comes through.
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	if rep, err := c.Check(ctx); err != nil || !errors.Is(rep.Err(), store.ErrInconsistent) {
		t.Fatalf("damaged backend: got %v, %v; want ErrInconsistent", rep.Err(), err)
	}

	plain := mustNew(t, struct{ store.Store }{mustFileStore(t)}, cachestore.Options{})
	if _, err := plain.Check(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("backend without a check: got %v, want errors.ErrUnsupported", err)
	}
}
