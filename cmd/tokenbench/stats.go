package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Result is what one measured phase produced; it is also the -json form.
type Result struct {
	Name       string         `json:"name"`
	Target     string         `json:"target"`
	Workers    int            `json:"workers"`
	Duration   Seconds        `json:"durationSeconds"`
	OK         int            `json:"ok"`
	Throughput float64        `json:"throughputPerSecond"`
	P50        Millis         `json:"p50Ms"`
	P95        Millis         `json:"p95Ms"`
	P99        Millis         `json:"p99Ms"`
	Max        Millis         `json:"maxMs"`
	Refusals   map[string]int `json:"refusals"`
	Errors     map[string]int `json:"errors"`
	BodyBytes  int            `json:"bodyBytes"`
	// NewConns is how many TCP connections the phase opened (keep-alive: ≈ workers).
	NewConns int `json:"newConnections"`
	// ClientCPUPerReq is this process's CPU time per successful request: the generator,
	// plus the handler for the in-process baseline.
	ClientCPUPerReq Micros `json:"clientCpuUsPerRequest"`
	// ServerCPUPerReq is the service process's CPU time per successful request
	// (-server-pid; 10 ms resolution).
	ServerCPUPerReq Micros `json:"serverCpuUsPerRequest,omitempty"`
	Interrupted     bool   `json:"interrupted,omitempty"`
}

// Seconds marshals a duration as fractional seconds.
type Seconds time.Duration

// MarshalJSON writes the duration in seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', 3, 64), nil
}

// Millis marshals a duration as fractional milliseconds.
type Millis time.Duration

// MarshalJSON writes the duration in milliseconds.
func (m Millis) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(m)/float64(time.Millisecond), 'f', 3, 64), nil
}

// Micros marshals a duration as fractional microseconds.
type Micros time.Duration

// MarshalJSON writes the duration in microseconds.
func (m Micros) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(m)/float64(time.Microsecond), 'f', 1, 64), nil
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted, or 0 for
// an empty slice: the smallest value with at least p % of the samples at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// tally is one worker's private counts, merged after the phase (no shared writes on the
// hot path).
type tally struct {
	lat      []time.Duration // successful (2xx) exchanges only
	refusals map[string]int  // 429/503 with Retry-After, by status
	errors   map[string]int  // everything else that is not 2xx, by status or "transport"
}

func newTally() *tally {
	return &tally{lat: make([]time.Duration, 0, 4096), refusals: map[string]int{}, errors: map[string]int{}}
}

// summarize merges the workers' tallies into a Result over elapsed wall time.
func summarize(name, target string, workers int, elapsed time.Duration, tallies []*tally) Result {
	r := Result{Name: name, Target: target, Workers: workers, Duration: Seconds(elapsed),
		Refusals: map[string]int{}, Errors: map[string]int{}}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.lat...)
		for k, v := range t.refusals {
			r.Refusals[k] += v
		}
		for k, v := range t.errors {
			r.Errors[k] += v
		}
	}
	slices.Sort(all)
	r.OK = len(all)
	if elapsed > 0 {
		r.Throughput = float64(r.OK) / elapsed.Seconds()
	}
	r.P50 = Millis(percentile(all, 50))
	r.P95 = Millis(percentile(all, 95))
	r.P99 = Millis(percentile(all, 99))
	if len(all) > 0 {
		r.Max = Millis(all[len(all)-1])
	}
	return r
}

// sortedKeys lists a count map's keys in order, for stable output.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
