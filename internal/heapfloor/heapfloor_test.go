package heapfloor_test

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/heapfloor"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	tests := []struct {
		name               string
		base               int
		floor, live, roots uint64
		want               int
	}{
		{"small live heap: the next cycle starts at the floor", 100, 64 * mib, 8 * mib, 0, 700},
		{"the roots count in the goal", 100, 64 * mib, 8 * mib, 6 * mib, 400},
		{"a tiny live heap: the 4 MiB minimum, scaled, is the floor", 100, 64 * mib, mib, 0, 1600},
		{"live heap at half the floor: the base", 100, 64 * mib, 32 * mib, 0, 100},
		{"live heap and roots reach the floor at the base", 100, 64 * mib, 24 * mib, 16 * mib, 100},
		{"live heap above the floor: the base", 100, 64 * mib, 200 * mib, mib, 100},
		{"a larger base is kept", 2000, 64 * mib, 8 * mib, 0, 2000},
		{"a smaller base is raised", 50, 64 * mib, 16 * mib, 0, 300},
		{"nothing measured yet: the base", 100, 64 * mib, 0, 0, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := heapfloor.Percent(tt.base, tt.floor, tt.live, tt.roots); got != tt.want {
				t.Errorf("Percent(%d, %d, %d, %d) = %d, want %d", tt.base, tt.floor, tt.live, tt.roots, got, tt.want)
			}
		})
	}
}

// read reads one uint64 runtime metric.
func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gogc reads the collector's current GOGC without changing it.
func gogc() uint64 { return read("/gc/gogc:percent") }

// TestStartRaisesAndStopRestores: with this test binary's small live heap, a 1 GiB floor
// raises GOGC at once and again after each cycle; stop restores the process's own; floor
// 0 changes nothing.
func TestStartRaisesAndStopRestores(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	stop := heapfloor.Start(0)
	runtime.GC()
	if got := gogc(); got != 100 {
		t.Fatalf("floor 0: GOGC %d, want 100", got)
	}
	stop()

	stop = heapfloor.Start(1 << 30)
	if got := gogc(); got <= 100 {
		t.Fatalf("right after Start: GOGC %d, want it raised", got)
	}
	// The runtime's own goal for the next cycle is the floor (the goal counts stacks and
	// globals too, and its 4 MiB minimum grows with GOGC: a GOGC from the live heap
	// alone would overshoot the floor many times).
	if goal := read("/gc/heap/goal:bytes"); goal < 1<<30*95/100 || goal > 1<<30*105/100 {
		t.Errorf("heap goal %.1f MiB, want the 1024 MiB floor within 5 %%", float64(goal)/mib)
	}
	// Each cycle tunes it again: set it back, and a cycle raises it, every time.
	for round := range 3 {
		debug.SetGCPercent(100)
		deadline := time.Now().Add(10 * time.Second)
		for gogc() <= 100 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: GOGC still %d after cycles with a 1 GiB floor", round, gogc())
			}
			runtime.GC()
			time.Sleep(time.Millisecond) // the cleanup runs on its own goroutine
		}
	}
	stop()
	if got := gogc(); got != 100 {
		t.Fatalf("after stop: GOGC %d, want 100", got)
	}
	// Stopped means stopped: later cycles leave GOGC alone.
	runtime.GC()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if got := gogc(); got != 100 {
		t.Fatalf("cycles after stop: GOGC %d, want 100", got)
	}
}

// TestOffStaysOff: GOGC=off (the collector off) is left alone.
func TestOffStaysOff(t *testing.T) {
	base := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(base)
	stop := heapfloor.Start(1 << 30)
	defer stop()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GOGC off became %d", got)
	}
}

// TestOverlappingStarts: GOGC is one per process, so a Start while another is in effect
// does nothing: whichever stops first, the process's own GOGC is back once both have
// (a second tuner would have taken the first's raised GOGC for the process's own).
func TestOverlappingStarts(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)
	first := heapfloor.Start(1 << 30)
	if got := gogc(); got <= 100 {
		t.Fatalf("first Start: GOGC %d, want it raised", got)
	}
	second := heapfloor.Start(1 << 30)
	first()
	first() // a second call does nothing
	second()
	runtime.GC()
	time.Sleep(10 * time.Millisecond) // a stray tuner's cleanup would run by now
	if got := gogc(); got != 100 {
		t.Errorf("after both stopped: GOGC %d, want 100", got)
	}
	// A new Start works again once none is in effect.
	third := heapfloor.Start(1 << 30)
	defer third()
	if got := gogc(); got <= 100 {
		t.Errorf("Start after both stopped: GOGC %d, want it raised", got)
	}
}
