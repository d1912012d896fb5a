package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/handshake"
	"github.com/tokensvc/tokensvc/internal/metrics"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
)

type fakeCache struct{ st cachestore.Stats }

func (f *fakeCache) Stats() cachestore.Stats { return f.st }

// failingStore answers GetDevice with the error it holds.
type failingStore struct {
	store.Store
	err error
}

func (f failingStore) GetDevice(context.Context, string) (domain.Device, error) {
	return domain.Device{}, f.err
}

type fakeHandshakes struct{ st handshake.Stats }

func (f *fakeHandshakes) Stats() handshake.Stats { return f.st }

// TestSnapshotCollectorsReadAtScrape: the key cache's and the handshake bound's
// counters are read when /metrics is scraped (set after registering), with their
// names and types.
func TestSnapshotCollectorsReadAtScrape(t *testing.T) {
	tests := []struct {
		name     string
		register func(m *metrics.Metrics) (set func())
		want     []string
	}{
		{
			name: "key cache",
			register: func(m *metrics.Metrics) func() {
				c := &fakeCache{}
				m.RegisterCache(c)
				return func() { c.st = cachestore.Stats{Hits: 7, Misses: 3, BackendReads: 4, StaleServed: 1, FastFailures: 2} }
			},
			want: []string{
				"# TYPE tokensvc_key_cache_hits_total counter",
				"tokensvc_key_cache_hits_total 7",
				"tokensvc_key_cache_misses_total 3",
				"tokensvc_key_cache_backend_reads_total 4",
				"tokensvc_key_cache_stale_served_total 1",
				"tokensvc_key_cache_fast_failures_total 2",
			},
		},
		{
			name: "handshake bound",
			register: func(m *metrics.Metrics) func() {
				h := &fakeHandshakes{}
				m.RegisterHandshakes(h)
				return func() { h.st = handshake.Stats{InUse: 5, Waited: 11, Busy: 2} }
			},
			want: []string{
				"# TYPE tokensvc_tls_handshakes_in_progress gauge",
				"tokensvc_tls_handshakes_in_progress 5",
				"# TYPE tokensvc_tls_handshakes_waited_total counter",
				"tokensvc_tls_handshakes_waited_total 11",
				"tokensvc_tls_handshakes_refused_total 2",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := metrics.New(prometheus.NewRegistry())
			tt.register(m)()
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			for _, want := range tt.want {
				if !strings.Contains(rec.Body.String(), want+"\n") {
					t.Errorf("exposition lacks %q", want)
				}
			}
		})
	}
}

func TestStoreErrorsCountOnlyFailures(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantErrors float64
	}{
		{name: "found", err: nil, wantErrors: 0},
		{name: "not found is an answer", err: fmt.Errorf("device: %w", store.ErrNotFound), wantErrors: 0},
		{name: "unavailable", err: fmt.Errorf("vault: %w", store.ErrUnavailable), wantErrors: 1},
		{name: "other", err: errors.New("boom"), wantErrors: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := metrics.New(reg)
			s := m.InstrumentStore(failingStore{err: tc.err})
			_, _ = s.GetDevice(t.Context(), "secret-device-id")
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var gotErrors, gotCount float64
			for _, mf := range mfs {
				for _, mm := range mf.GetMetric() {
					switch mf.GetName() {
					case "tokensvc_store_errors_total":
						gotErrors += mm.GetCounter().GetValue()
					case "tokensvc_store_operation_duration_seconds":
						gotCount += float64(mm.GetHistogram().GetSampleCount())
					}
				}
			}
			if gotErrors != tc.wantErrors || gotCount != 1 {
				t.Errorf("got errors %v, calls %v; want errors %v, calls 1", gotErrors, gotCount, tc.wantErrors)
			}
		})
	}
}

func TestHandlerServesOwnRegistryOnly(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.HTTPRequest("GET", "/token", 429, 3*time.Millisecond)
	m.HTTPRequest("BREW", "/token", 999, time.Millisecond)
	m.RateLimited("device")
	m.TokenRequest("main", "", "error")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`tokensvc_http_request_duration_seconds_count{code="4xx",method="GET",route="/token"} 1`,
		`tokensvc_http_request_duration_seconds_count{code="other",method="other",route="/token"} 1`,
		`tokensvc_rate_limited_total{limit="device"} 1`,
		`tokensvc_tokens_issued_total{hub="main",kind="unknown",outcome="error"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
