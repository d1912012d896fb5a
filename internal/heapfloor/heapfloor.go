// Package heapfloor keeps the Go collector from running on a heap smaller than a floor.
//
// The collector starts a cycle when the heap reaches the live heap plus GOGC % of it and
// of the stacks and globals, but never below 4 MiB × GOGC/100. A service whose live heap
// is a few MiB and which allocates a few KiB per request at tens of thousands of
// requests per second therefore collects dozens of times a second, and each cycle has
// fixed costs (stacks, globals, waking mark workers): keeping a 64 MiB floor took 3–10 %
// off tokensvc's CPU per keep-alive request (BENCHMARKS §20.2). A larger fixed GOGC would shrink that but also multiply a large
// live heap; a memory limit with GOGC off would make the scavenger hand pages back to
// the OS and fault them in again (measured: slower than either).
//
// Start instead raises GOGC after each cycle just enough that the next one starts at the
// floor, while the live heap is small; once the process's own GOGC reaches the floor by
// itself, it is that GOGC again. So the heap grows to about max(floor, Go's own goal):
// the floor is a fixed amount of memory spent for CPU, and a large live heap is
// collected as without it.
package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// heapMinimum is the runtime's smallest goal at GOGC=100 (4 MiB); it scales with GOGC, so
// a GOGC of p never aims below heapMinimum × p/100.
const heapMinimum = 4 << 20

// Percent returns the GOGC that starts the next cycle at floor bytes, never below base
// (the process's own GOGC). The collector's goal is the larger of live + (live + roots)
// × GOGC/100, where live is the heap the last cycle marked and roots the goroutine
// stacks and globals it scanned, and 4 MiB × GOGC/100.
func Percent(base int, floor, live, roots uint64) int {
	scan := live + roots
	if scan == 0 || floor <= live+scan*uint64(base)/100 {
		return base
	}
	p := min((floor-live)*100/scan, floor*100/heapMinimum)
	return max(base, int(p))
}

// The runtime/metrics the goal is made of.
var goalParts = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// active is whether a Start is in effect: GOGC is one setting per process, so only the
// first of overlapping Starts keeps a floor (the later ones would read its raised GOGC
// as the process's own and restore that).
var (
	activeMu sync.Mutex
	active   bool
)

// Start keeps the heap floor (bytes) until stop is called; stop restores the GOGC the
// process had. It does nothing with floor 0, when the collector is off (GOGC=off), or
// while an earlier Start is in effect.
func Start(floor uint64) (stop func()) {
	activeMu.Lock()
	defer activeMu.Unlock()
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if floor == 0 || base < 0 || active {
		return func() {}
	}
	active = true
	t := &tuner{base: base, floor: floor, sample: make([]metrics.Sample, len(goalParts))}
	for i, name := range goalParts {
		t.sample[i].Name = name
	}
	t.tune()
	t.arm()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			t.stopped = true
			debug.SetGCPercent(t.base)
			t.mu.Unlock()
			activeMu.Lock()
			active = false
			activeMu.Unlock()
		})
	}
}

// sentinel holds a pointer so that it is never a tiny allocation (sharing a block with
// others, whose cleanups may never run).
type sentinel struct{ _ *byte }

type tuner struct {
	base   int
	floor  uint64
	sample []metrics.Sample

	mu      sync.Mutex
	stopped bool
}

// arm has tune run after the next cycle: the cleanup of an object nothing refers to runs
// once a cycle has found it unreachable, and re-arms with a fresh one.
func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *tuner) {
		if t.tune() {
			t.arm()
		}
	}, t)
}

// tune sets GOGC for the heap and roots the last cycle found; false once stopped.
func (t *tuner) tune() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return true // not in this runtime: leave GOGC as it is
		}
		v[i] = s.Value.Uint64()
	}
	debug.SetGCPercent(Percent(t.base, t.floor, v[0], v[1]+v[2]))
	return true
}
