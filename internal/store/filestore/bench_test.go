package filestore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

const benchDevices = 100_000

// benchFile writes a store file holding benchDevices devices, realistic in size.
func benchFile(b *testing.B) (string, []byte, []string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.db")
	key := newKey(b)
	hubs := []domain.Hub{iotHub("hub-a"), policyHub("hub-b")}
	devices := make([]domain.Device, benchDevices)
	ids := make([]string, benchDevices)
	for i := range devices {
		ids[i] = fmt.Sprintf("device-%08d", i)
		devices[i] = device(ids[i], hubs[i%2].Name)
	}
	if err := filestore.WriteSnapshotForTest(path, key, hubs, devices); err != nil {
		b.Fatal(err)
	}
	// The first Open migrates the v1 snapshot; the benchmarks measure the file after.
	s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return path, key, ids
}

// BenchmarkCreateDevice includes the commit (fsync) every acknowledged write pays
// when it is the only writer.
func BenchmarkCreateDevice(b *testing.B) {
	s, ctx := benchHubStore(b)
	d := device("", "hub-a")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.ID = fmt.Sprintf("device-%09d", i)
		if err := s.CreateDevice(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateDeviceParallel has 64 callers per core share commits (group commit).
func BenchmarkCreateDeviceParallel(b *testing.B) {
	s, _ := benchHubStore(b)
	createParallel(b, s, 0, func(err error) bool {
		if err != nil {
			b.Error(err)
		}
		return err == nil
	})
}

// BenchmarkCreateDeviceExistsParallel is an import run again: 64 callers per core
// create devices that are all there already (store.ErrExists), as a bulk import
// resumed after a crash does for every line done before it.
func BenchmarkCreateDeviceExistsParallel(b *testing.B) {
	s, ctx := benchHubStore(b)
	const have = 1000
	for i := range have {
		if err := s.CreateDevice(ctx, device(fmt.Sprintf("device-%09d", i), "hub-a")); err != nil {
			b.Fatal(err)
		}
	}
	createParallel(b, s, have, func(err error) bool {
		if !errors.Is(err, store.ErrExists) {
			b.Errorf("CreateDevice of an existing device: got %v, want %v", err, store.ErrExists)
			return false
		}
		return true
	})
}

// benchHubStore opens a fresh store holding hub-a.
func benchHubStore(b *testing.B) (*filestore.Store, context.Context) {
	s := mustOpen(b, filepath.Join(b.TempDir(), "bench.db"), newKey(b), filestore.WithLogger(discardLogger))
	ctx := b.Context()
	if err := s.CreateHub(ctx, iotHub("hub-a")); err != nil {
		b.Fatal(err)
	}
	return s, ctx
}

// createParallel has 64 callers per core create devices on hub-a, numbered from 1 (or,
// with ids > 0, cycling through device-0 … ids-1), until b is done or check, given each
// CreateDevice's error, says to stop.
func createParallel(b *testing.B, s *filestore.Store, ids int64, check func(error) bool) {
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if ids > 0 {
				i %= ids
			}
			if !check(s.CreateDevice(b.Context(), device(fmt.Sprintf("device-%09d", i), "hub-a"))) {
				return
			}
		}
	})
}

func BenchmarkGetDevice(b *testing.B) {
	benchRandomReads(b, func(ctx context.Context, s *filestore.Store, id string) error {
		_, err := s.GetDevice(ctx, id)
		return err
	})
}

func BenchmarkGetDeviceParallel(b *testing.B) {
	path, key, ids := benchFile(b)
	s := mustOpen(b, path, key, filestore.WithLogger(discardLogger))
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			if _, err := s.GetDevice(ctx, ids[r.IntN(len(ids))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkListDevices100(b *testing.B) {
	benchRandomReads(b, func(ctx context.Context, s *filestore.Store, id string) error {
		_, err := s.ListDevices(ctx, id, 100)
		return err
	})
}

// benchRandomReads opens benchFile's 100,000-device store and calls read with a
// device ID drawn at random (the same sequence every run) until b is done.
func benchRandomReads(b *testing.B, read func(ctx context.Context, s *filestore.Store, id string) error) {
	path, key, ids := benchFile(b)
	s := mustOpen(b, path, key, filestore.WithLogger(discardLogger))
	ctx := b.Context()
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if err := read(ctx, s, ids[r.IntN(len(ids))]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen100k measures start-up with 100,000 devices (migrated from a v1
// snapshot by benchFile).
func BenchmarkOpen100k(b *testing.B) {
	path, key, _ := benchFile(b)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "file-MiB")
}

// BenchmarkBackup100k is POST /store/backup's copy of the 100,000-device file, written
// to a discarding writer: the read side of an online backup, in MiB/s.
func BenchmarkBackup100k(b *testing.B) {
	path, key, _ := benchFile(b)
	s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n int64
	b.ReportAllocs()
	for b.Loop() {
		if n, err = s.Backup(context.Background(), io.Discard, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(n)
}

// BenchmarkCommitFloor measures what this machine's disk allows a bbolt commit at 10⁶
// devices, with none of the store's code: a commit's I/O as bbolt does it (commitPages
// random 4 KiB page writes in a 512 MiB file, a sync, the meta page, a sync), from one
// file and from several files committing at once, one committer each — the question
// being whether spreading devices over several bbolt files would buy commit throughput.
// It reports pages/s (a new device costs about two pages at 10⁶ devices: BENCHMARKS
// §14.1). Each op is one commit in one of the files.
func BenchmarkCommitFloor(b *testing.B) {
	const (
		fileSize    = 512 << 20
		commitPages = 128
	)
	for _, files := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			fds := make([]*os.File, files)
			for i := range fds {
				f, err := os.Create(filepath.Join(b.TempDir(), fmt.Sprintf("floor-%d", i)))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if err := f.Truncate(fileSize); err != nil {
					b.Fatal(err)
				}
				fds[i] = f
			}
			var commits atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for _, f := range fds {
				wg.Go(func() {
					page := make([]byte, 4096)
					for commits.Add(1) <= int64(b.N) {
						if err := commitIO(f, page, commitPages, fileSize); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*commitPages)/b.Elapsed().Seconds(), "pages/s")
		})
	}
}

// commitIO is one commit's I/O as bbolt does it: pages random page writes into a file
// of size bytes, a sync, the meta page, a sync.
func commitIO(f *os.File, page []byte, pages, size int) error {
	for range pages {
		if _, err := f.WriteAt(page, int64(rand.IntN(size/len(page))*len(page))); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if _, err := f.WriteAt(page, 0); err != nil {
		return err
	}
	return f.Sync()
}
