package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// StoreReadMetrics are the Prometheus series that count reads from the backing store:
// the key cache's backend reads (Vault store with the cache on), and the store
// operations timed beneath the cache (every Vault or file store call), by operation.
var StoreReadMetrics = []string{
	KeyCacheReads,
	`tokensvc_store_operation_duration_seconds_count{op="get_device"}`,
	`tokensvc_store_operation_duration_seconds_count{op="get_hub"}`,
}

// KeyCacheReads is the series of the Vault key cache's reads from Vault.
const KeyCacheReads = "tokensvc_key_cache_backend_reads_total"

// StoreReads scrapes StoreReadMetrics from a metrics URL before and after a stretch of
// work; the zero value (no URL) measures nothing.
type StoreReads struct {
	client *http.Client
	url    string
	before map[string]float64
}

// StartStoreReads scrapes url (none if empty) with client for the counts before.
func StartStoreReads(ctx context.Context, client *http.Client, url string) (*StoreReads, error) {
	s := &StoreReads{client: client, url: url}
	if url == "" {
		return s, nil
	}
	var err error
	s.before, err = ScrapeCounters(ctx, client, url, StoreReadMetrics)
	return s, err
}

// Delta scrapes again and returns the counts since StartStoreReads; nil without a URL.
func (s *StoreReads) Delta(ctx context.Context) (map[string]float64, error) {
	if s.url == "" {
		return nil, nil
	}
	after, err := ScrapeCounters(ctx, s.client, s.url, StoreReadMetrics)
	if err != nil {
		return nil, err
	}
	return CounterDelta(s.before, after), nil
}

// ScrapeCounters fetches a Prometheus text exposition and returns the values of the
// named series (name or name{labels} exactly as exposed); absent series are left out.
func ScrapeCounters(ctx context.Context, client *http.Client, url string, names []string) (map[string]float64, error) {
	var out map[string]float64
	err := fetch(ctx, client, 10*time.Second, "scrape "+url, get(url), func(r io.Reader) (err error) {
		out, err = ParseCounters(io.LimitReader(r, 16<<20), names)
		return err
	})
	return out, err
}

// ParseCounters picks the named series out of Prometheus text format.
func ParseCounters(r io.Reader, names []string) (map[string]float64, error) {
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

// CounterDelta is after - before for every series present in after.
func CounterDelta(before, after map[string]float64) map[string]float64 {
	d := make(map[string]float64, len(after))
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}
