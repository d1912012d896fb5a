package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// peakRSS is a process's peak resident set size (VmHWM) in bytes, from
// /proc/<pid>/status; pid 0 means this process.
func peakRSS(pid int) (int64, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseVmHWM(f)
}

// parseVmHWM reads the VmHWM line ("VmHWM:   123456 kB") of a /proc status file.
func parseVmHWM(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmHWM: unexpected format %q", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM: %w", err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM line")
}

// storeReadMetrics are the Prometheus series that count reads from the backing store:
// the key cache's backend reads (Vault store with the cache on), and the store
// operations timed beneath the cache (every Vault or file store call), by operation.
var storeReadMetrics = []string{
	"tokensvc_key_cache_backend_reads_total",
	`tokensvc_store_operation_duration_seconds_count{op="get_device"}`,
	`tokensvc_store_operation_duration_seconds_count{op="get_hub"}`,
}

// scrapeCounters fetches a Prometheus text exposition and returns the values of the
// named series (name or name{labels} exactly as exposed); absent series are left out.
func scrapeCounters(ctx context.Context, client *http.Client, url string, names []string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, resp.StatusCode)
	}
	return parseCounters(io.LimitReader(resp.Body, 16<<20), names)
}

// parseCounters picks the named series out of Prometheus text format.
func parseCounters(r io.Reader, names []string) (map[string]float64, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || !want[line[:i]] {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", line[:i], err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// counterDelta is after - before for every series present in after.
func counterDelta(before, after map[string]float64) map[string]float64 {
	d := make(map[string]float64, len(after))
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}
