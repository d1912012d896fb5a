// Package metrics holds tokensvc's Prometheus instruments. Everything registers on one
// explicit *prometheus.Registry handed in by the caller, never the global one. Label
// values are bounded sets only — route patterns, hub names and kinds, outcomes, store
// operations — never device IDs, tokens or keys.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "tokensvc"

// Metrics are the service's instruments.
type Metrics struct {
	reg *prometheus.Registry

	tokens        *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	rateLimited   *prometheus.CounterVec
	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
}

// New creates the instruments and registers them, with the Go runtime and process
// collectors, on reg.
func New(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "tokens_issued_total",
			Help:      "Token requests by hub, hub kind and outcome (issued, forbidden, not_found, unavailable, error).",
		}, []string{"hub", "kind", "outcome"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "http_request_duration_seconds",
			Help:      "HTTP request latency by method, route pattern and status class.",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route", "code"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "rate_limited_total",
			Help:      "Requests refused by a limit: device (per-device bucket), global (service bucket) or inflight (concurrency bound).",
		}, []string{"limit"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "store_operation_duration_seconds",
			Help:      "Key store call latency by operation.",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "store_errors_total",
			Help:      "Key store calls that failed for a reason other than not-found, exists or conflict, by operation.",
		}, []string{"op"}),
	}
	reg.MustRegister(m.tokens, m.httpDuration, m.rateLimited, m.storeDuration, m.storeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry the instruments are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// TokenRequest counts one token request's outcome for a hub. kind may be empty when
// the hub could not be read.
func (m *Metrics) TokenRequest(hub, kind, outcome string) {
	if kind == "" {
		kind = "unknown"
	}
	m.tokens.WithLabelValues(hub, kind, outcome).Inc()
}

// HTTPRequest observes one request. route must be a route pattern (e.g.
// /devices/{deviceId}), never a raw path; nonstandard methods are counted as "other".
func (m *Metrics) HTTPRequest(method, route string, status int, d time.Duration) {
	m.httpDuration.WithLabelValues(Method(method), route, statusClass(status)).Observe(d.Seconds())
}

// RateLimited counts one request refused by the named limit.
func (m *Metrics) RateLimited(limit string) {
	m.rateLimited.WithLabelValues(limit).Inc()
}

func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

// knownMethods bounds the method label: anything else is "other".
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// Method returns m when it is a standard method and "other" otherwise, so clients
// cannot mint label values.
func Method(m string) string {
	if knownMethods[m] {
		return m
	}
	return "other"
}
