package gateway

import (
	"runtime/metrics"
)

// RuntimeStats are the Go runtime's figures that bound a gateway's memory, for the
// periodic stats line: what a thousand leaves cost and what the soft memory limit
// costs in CPU.
type RuntimeStats struct {
	// Goroutines running now; HeapLiveKiB the heap the last collection kept;
	// StacksKiB the goroutine stacks; TotalKiB all memory the runtime mapped and did
	// not return (close to the process's resident memory without its code);
	// MemoryLimitKiB the soft limit (0: none).
	Goroutines, HeapLiveKiB, StacksKiB, TotalKiB, MemoryLimitKiB int64
	// GCs counts collections; GCCPUPercent is the share of the process's CPU time
	// spent collecting since it started (it grows when live memory nears the limit).
	GCs          int64
	GCCPUPercent float64
}

var runtimeSamples = []string{
	"/sched/goroutines:goroutines",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/gc/gomemlimit:bytes",
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
	"/cpu/classes/total:cpu-seconds",
}

// ReadRuntimeStats samples the runtime.
func ReadRuntimeStats() RuntimeStats {
	s := make([]metrics.Sample, len(runtimeSamples))
	for i, name := range runtimeSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	u := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	f := func(i int) float64 {
		if s[i].Value.Kind() != metrics.KindFloat64 {
			return 0
		}
		return s[i].Value.Float64()
	}
	r := RuntimeStats{Goroutines: u(0), HeapLiveKiB: u(1) >> 10, StacksKiB: u(2) >> 10,
		TotalKiB: (u(3) - u(4)) >> 10, GCs: u(6)}
	if limit := u(5); limit < 1<<62 {
		r.MemoryLimitKiB = limit >> 10
	}
	if total := f(8); total > 0 {
		r.GCCPUPercent = float64(int(1000*f(7)/total)) / 10
	}
	return r
}
