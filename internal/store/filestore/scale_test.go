package filestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// This file measures the store at fleet size. It uses only what the v1 store had too
// (Open, the store methods, WriteSnapshotForTest), so scripts/bench-filestore.sh can
// copy it into an older revision and run both in one go. It runs only when
// TOKENSVC_SCALE_DEVICES is set; it is a measurement, not a test, and asserts nothing
// about speed.

func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		tb.Fatalf("%s=%q: want a count", name, v)
	}
	return n
}

// scaleResult is the line TestScale prints (prefixed "SCALE ").
type scaleResult struct {
	Devices          int     `json:"devices"`
	FirstOpenSeconds float64 `json:"firstOpenSeconds"` // v1 file: migration (new) or replay (v1)
	OpenSeconds      float64 `json:"openSeconds"`      // Open to ready, second Open
	HeapMiB          float64 `json:"liveHeapMiB"`      // live heap after Open and a GetDevice
	HeapBeforeMiB    float64 `json:"liveHeapBeforeOpenMiB"`
	FileMiB          float64 `json:"fileMiB"`
	GetDeviceMicros  float64 `json:"getDeviceMicros"`      // random GetDevice, one goroutine
	HeapAfterGetsMiB float64 `json:"liveHeapAfterGetsMiB"` // after 20,000 random GetDevice (caches warm)
	ImportDevices    int     `json:"importDevices"`
	Writers          int     `json:"writers"`
	ImportPerSecond  float64 `json:"importDevicesPerSecond"`
	ImportCPUMicros  float64 `json:"importCpuMicrosPerDevice"`  // process CPU (user+system) per device imported
	WritesPerCommit  float64 `json:"writesPerCommit,omitempty"` // group commit, where the store reports it
	// The same import run again into that store: every CreateDevice refused (ErrExists).
	ReimportPerSecond float64 `json:"reimportDevicesPerSecond"`
	// The same import into the DEVICES-device store (after the measurements above):
	// every insert lands in a tree of 10^6 keys, so it dirties more pages than in an
	// empty store.
	ImportAtScalePerSecond float64 `json:"importAtScaleDevicesPerSecond"`
	ImportAtScaleCPUMicros float64 `json:"importAtScaleCpuMicrosPerDevice"`
	WritesPerCommitAtScale float64 `json:"writesPerCommitAtScale,omitempty"`
	// Where the import's time went, where the store reports it (CommitStats): pages
	// written per commit, and per device the time bbolt spent writing and fsyncing
	// (disk) and laying out pages (spill). 1e6/diskMicros is the rate the import would
	// reach if nothing but the disk took time.
	Cost        *importCost `json:"importCost,omitempty"`
	CostAtScale *importCost `json:"importAtScaleCost,omitempty"`
}

type importCost struct {
	PagesPerCommit  float64 `json:"pagesPerCommit"`
	PagesPerDevice  float64 `json:"pagesPerDevice"`
	DiskMicros      float64 `json:"diskMicrosPerDevice"`
	SpillMicros     float64 `json:"spillMicrosPerDevice"`
	DiskBoundPerSec float64 `json:"diskBoundDevicesPerSecond"`
}

// TestScale builds a TOKENSVC_SCALE_DEVICES-device store file (written as a v1
// snapshot, then opened), measures Open and the live heap, and imports
// TOKENSVC_SCALE_IMPORT devices (default 20,000) into an empty store through
// TOKENSVC_SCALE_WRITERS concurrent CreateDevice callers (default 64).
func TestScale(t *testing.T) {
	n := envInt(t, "TOKENSVC_SCALE_DEVICES", 0)
	if n == 0 {
		t.Skip("set TOKENSVC_SCALE_DEVICES to measure the store at that size (scripts/bench-filestore.sh)")
	}
	res := scaleResult{
		Devices:       n,
		ImportDevices: envInt(t, "TOKENSVC_SCALE_IMPORT", 20_000),
		Writers:       envInt(t, "TOKENSVC_SCALE_WRITERS", 64),
	}
	dir := t.TempDir()
	key := newKey(t)
	measureImport(t, filepath.Join(dir, "import.db"), key, &res)
	measureOpen(t, filepath.Join(dir, "fleet.db"), key, &res)
	b, err := json.Marshal(res)
	must(t, err)
	fmt.Printf("SCALE %s\n", b)
}

func scaleID(i int) string { return fmt.Sprintf("dev-%08d", i) }

// measureImport creates res.ImportDevices devices in random ID order from res.Writers
// goroutines, into an empty store.
func measureImport(t *testing.T, path string, key []byte, res *scaleResult) {
	s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
	must(t, err)
	defer s.Close()
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))
	res.ImportPerSecond, res.ImportCPUMicros, res.WritesPerCommit, res.Cost = importDevices(t, s, scaleID, res.ImportDevices, res.Writers, nil)
	// The same import again: every device is there (an import resumed after a crash).
	res.ReimportPerSecond, _, _, _ = importDevices(t, s, scaleID, res.ImportDevices, res.Writers, store.ErrExists)
}

// batchStats reads the group commit counters of stores that have them.
func batchStats(s any) (commits, writes int64) {
	if bs, ok := s.(interface{ BatchStats() (int64, int64) }); ok {
		return bs.BatchStats()
	}
	return 0, 0
}

// importDevices creates n devices named id(0) .. id(n-1) on hub-a, in random order,
// from writers goroutines, each call failing with want (nil: none), and returns the rate, the process CPU per device and the writes
// per commit (0 if the store does not report them), and its cost breakdown (nil if the
// store does not report it).
func importDevices(t *testing.T, s interface {
	CreateDevice(context.Context, domain.Device) error
}, id func(int) string, n, writers int, want error) (perSecond, cpuMicros, perCommit float64, cost *importCost) {
	ctx := t.Context()
	commits0, writes0 := batchStats(s)
	cs, _ := s.(interface {
		CommitStats() (int64, time.Duration, time.Duration)
	})
	var pages0 int64
	var spill0, write0 time.Duration
	if cs != nil {
		pages0, spill0, write0 = cs.CommitStats()
	}
	order := rand.Perm(n)
	next := make(chan int, writers)
	var wg sync.WaitGroup
	var failed sync.Once
	cpu0 := cpuTime(t)
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for i := range next {
				if err := s.CreateDevice(ctx, device(id(i), "hub-a")); !errors.Is(err, want) {
					failed.Do(func() { t.Errorf("CreateDevice: got %v, want %v", err, want) })
				}
			}
		})
	}
	for _, i := range order {
		next <- i
	}
	close(next)
	wg.Wait()
	perSecond = float64(n) / time.Since(start).Seconds()
	cpuMicros = float64((cpuTime(t) - cpu0).Microseconds()) / float64(n)
	commits, writes := batchStats(s)
	if commits > commits0 {
		perCommit = float64(writes-writes0) / float64(commits-commits0)
	}
	if cs != nil && commits > commits0 {
		pages, spill, write := cs.CommitStats()
		cost = &importCost{
			PagesPerCommit:  float64(pages-pages0) / float64(commits-commits0),
			PagesPerDevice:  float64(pages-pages0) / float64(n),
			DiskMicros:      float64((write - write0).Microseconds()) / float64(n),
			SpillMicros:     float64((spill - spill0).Microseconds()) / float64(n),
			DiskBoundPerSec: float64(n) / (write - write0).Seconds(),
		}
	}
	return perSecond, cpuMicros, perCommit, cost
}

// measureOpen writes an n-device v1 snapshot, opens it once (the new store migrates
// it, the v1 store replays it), then measures a second Open to ready, the live heap
// after it and a GetDevice, the file size and GetDevice's latency, and last the import
// into this full store.
func measureOpen(t *testing.T, path string, key []byte, res *scaleResult) {
	devices := make([]domain.Device, res.Devices)
	for i := range devices {
		devices[i] = device(scaleID(i), "hub-a")
	}
	must(t, filestore.WriteSnapshotForTest(path, key, []domain.Hub{iotHub("hub-a")}, devices))
	devices = nil

	start := time.Now()
	s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
	must(t, err)
	res.FirstOpenSeconds = time.Since(start).Seconds()
	must(t, s.Close())

	res.HeapBeforeMiB = liveHeapMiB()
	start = time.Now()
	s, err = filestore.Open(path, key, filestore.WithLogger(discardLogger))
	must(t, err)
	defer s.Close()
	if _, err := s.GetDevice(t.Context(), scaleID(res.Devices/2)); err != nil {
		t.Fatal(err)
	}
	res.OpenSeconds = time.Since(start).Seconds()
	res.HeapMiB = liveHeapMiB()
	res.FileMiB = float64(fileSize(t, path)) / (1 << 20)

	const gets = 20_000
	start = time.Now()
	for range gets {
		if _, err := s.GetDevice(t.Context(), scaleID(rand.IntN(res.Devices))); err != nil {
			t.Fatal(err)
		}
	}
	res.GetDeviceMicros = float64(time.Since(start).Microseconds()) / gets
	res.HeapAfterGetsMiB = liveHeapMiB()
	// New IDs spread evenly among the existing ones (each just after one), so the
	// inserts land all over the tree, as a real import's would.
	spread := func(i int) string { return fmt.Sprintf("%s+%d", scaleID(i*res.Devices/max(res.ImportDevices, 1)), i) }
	res.ImportAtScalePerSecond, res.ImportAtScaleCPUMicros, res.WritesPerCommitAtScale, res.CostAtScale = importDevices(t, s, spread, res.ImportDevices, res.Writers, nil)
	runtime.KeepAlive(s)
}

func liveHeapMiB() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// cpuTime is the CPU time (user and system) the process has used: unlike a rate, CPU
// per device hardly depends on what else the machine is running.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
