package cachestore_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// freshStrings returns records with strings of their own, as a Vault read decodes them;
// the file store's records share their strings with its index, which would hide them.
type freshStrings struct{ store.Store }

func (f freshStrings) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	d, err := f.Store.GetDevice(ctx, id)
	d.ID, d.Hub = strings.Clone(d.ID), strings.Clone(d.Hub)
	d.PrimaryKey, d.SecondaryKey = strings.Clone(d.PrimaryKey), strings.Clone(d.SecondaryKey)
	d.Auth.PublicKey = strings.Clone(d.Auth.PublicKey)
	return d, err
}

// TestCacheMemoryPerDevice measures what a full key cache costs in heap, for sizing a
// replica's memory limit (BENCHMARKS.md §6): TOKENSVC_MEASURE_CACHE_MEMORY=<devices>
// (e.g. 100000, the default cache size) fills a file store with that many ES256
// devices as a boot storm registers them (IoT Hub keys, a PEM public key), reads each
// once through a cache that holds them all, and logs the live heap the cache added.
// Skipped otherwise: filling the store costs an fsync per device.
func TestCacheMemoryPerDevice(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TOKENSVC_MEASURE_CACHE_MEMORY"))
	if n <= 0 {
		t.Skip("set TOKENSVC_MEASURE_CACHE_MEMORY=<devices> to measure")
	}
	fs, err := filestore.Open(filepath.Join(t.TempDir(), "db"), make([]byte, filestore.KeySize),
		filestore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	ctx := t.Context()
	if err := fs.CreateHub(ctx, hub("hub-a")); err != nil {
		t.Fatal(err)
	}
	k := testca.P256Key(t)
	pub := testca.PublicKeyPEM(t, &k.PublicKey)
	key := func(i int, slot byte) string {
		var b [32]byte
		b[0], b[1], b[2], b[3] = byte(i), byte(i>>8), byte(i>>16), slot
		return base64.StdEncoding.EncodeToString(b[:])
	}
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("storm-1795355935-%06d", i)
		d := domain.Device{ID: ids[i], Hub: "hub-a", PrimaryKey: key(i, 1), SecondaryKey: key(i, 2),
			Auth: domain.Credential{Type: domain.CredES256, PublicKey: pub}, CreatedAt: t0, UpdatedAt: t0}
		if err := fs.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	c, err := cachestore.New(freshStrings{noClose{fs}}, cachestore.Options{TTL: time.Hour, MaxEntries: 2 * n}) // sharded: room enough that no shard evicts
	if err != nil {
		t.Fatal(err)
	}
	before := heap()
	for _, id := range ids {
		mustGet(t, c, id)
	}
	after := heap()
	if got := c.Len(); got < n {
		t.Fatalf("cache holds %d entries, want %d", got, n)
	}
	runtime.KeepAlive(c)
	per := float64(after-before) / float64(n)
	t.Logf("%d ES256 devices cached: heap +%.1f MiB, %.0f bytes per device", n, float64(after-before)/(1<<20), per)
}
