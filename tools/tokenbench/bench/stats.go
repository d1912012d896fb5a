package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
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
	return strconv.AppendFloat(nil, m.Float(), 'f', 3, 64), nil
}

// Float is m in milliseconds.
func (m Millis) Float() float64 { return float64(m) / float64(time.Millisecond) }

// Micros marshals a duration as fractional microseconds.
type Micros time.Duration

// MarshalJSON writes the duration in microseconds.
func (m Micros) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, m.Float(), 'f', 1, 64), nil
}

// Float is m in microseconds.
func (m Micros) Float() float64 { return float64(m) / float64(time.Microsecond) }

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted, or 0 for
// an empty slice: the smallest value with at least p % of the samples at or below it.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Tally is one worker's private counts, merged after the phase (no shared writes on the
// hot path).
type Tally struct {
	Lat      []time.Duration // successful (2xx) exchanges only
	Refusals map[string]int  // 429/503 with Retry-After, by status
	Errors   map[string]int  // everything else that is not 2xx, by status or "transport"
}

// NewTally is an empty Tally.
func NewTally() *Tally {
	return &Tally{Lat: make([]time.Duration, 0, 4096), Refusals: map[string]int{}, Errors: map[string]int{}}
}

// Record counts o in t.
func (t *Tally) Record(o Outcome) {
	switch o.Kind {
	case OutcomeOK:
		t.Lat = append(t.Lat, o.Latency)
	case OutcomeRefused:
		t.Refusals[o.Key]++
	case OutcomeError:
		t.Errors[o.Key]++
	}
}

// Summarize merges the workers' tallies into a Result over elapsed wall time.
func Summarize(name, target string, workers int, elapsed time.Duration, tallies []*Tally) Result {
	r := Result{Name: name, Target: target, Workers: workers, Duration: Seconds(elapsed),
		Refusals: map[string]int{}, Errors: map[string]int{}}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.Lat...)
		for k, v := range t.Refusals {
			r.Refusals[k] += v
		}
		for k, v := range t.Errors {
			r.Errors[k] += v
		}
	}
	slices.Sort(all)
	r.OK = len(all)
	if elapsed > 0 {
		r.Throughput = float64(r.OK) / elapsed.Seconds()
	}
	r.P50 = Millis(Percentile(all, 50))
	r.P95 = Millis(Percentile(all, 95))
	r.P99 = Millis(Percentile(all, 99))
	if len(all) > 0 {
		r.Max = Millis(all[len(all)-1])
	}
	return r
}

// Ratio is a/b, or 0 when b is not above 0 (nothing to compare with).
func Ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// Counts renders a count map as "k×n k×n" in key order, or "0" when empty.
func Counts(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// OrNA is s when ok, else "n/a".
func OrNA(ok bool, s string) string {
	if ok {
		return s
	}
	return "n/a"
}

// MiB is b bytes in MiB.
func MiB(b int64) float64 { return float64(b) / (1 << 20) }

// WriteJSON prints a report as indented JSON, the -json form of every benchmark.
func WriteJSON(w io.Writer, report any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}

// ResultHeader heads the columns of ResultColumns in a tab-separated table.
const ResultHeader = "phase\tok\treq/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\trefused (429/503+Retry-After)\terrors\tconns"

// ResultColumns are the table columns every keep-alive phase has, tab-separated: name,
// successes, throughput, latencies, refusals, errors and connections opened.
func ResultColumns(r Result) string {
	return fmt.Sprintf("%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%d", r.Name, r.OK, r.Throughput,
		r.P50.Float(), r.P95.Float(), r.P99.Float(), r.Max.Float(), Counts(r.Refusals), Counts(r.Errors), r.NewConns)
}

// CPUColumn is m in µs with one decimal, or none when m is 0 (not measured).
func CPUColumn(m Micros, none string) string {
	if m <= 0 {
		return none
	}
	return fmt.Sprintf("%.1f", m.Float())
}
