// Package metrics holds tokensvc's Prometheus instruments. Everything registers on one
// explicit *prometheus.Registry handed in by the caller, never the global one. Label
// values are bounded sets only — route patterns, hub names and kinds, outcomes, store
// operations — never device IDs, tokens or keys.
package metrics

import (
	"net/http"
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
	auditLost     prometheus.Counter

	// The children the hot path uses, bound once (bound.go).
	tokenChildren *bound[[3]string, prometheus.Counter]
	httpChildren  *bound[[3]string, prometheus.Observer]
	storeChildren *bound[string, prometheus.Observer]
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
		auditLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "audit_records_lost_total",
			Help:      "Audit records the audit sink could not write (disk full, closed stdout); each is also logged.",
		}),
	}
	m.tokenChildren = newBound(func(k [3]string) prometheus.Counter { return m.tokens.WithLabelValues(k[:]...) })
	m.httpChildren = newBound(func(k [3]string) prometheus.Observer { return m.httpDuration.WithLabelValues(k[:]...) })
	m.storeChildren = newBound(func(op string) prometheus.Observer { return m.storeDuration.WithLabelValues(op) })
	reg.MustRegister(m.tokens, m.httpDuration, m.rateLimited, m.storeDuration, m.storeErrors, m.auditLost,
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
	m.tokenChildren.get([3]string{hub, kind, outcome}).Inc()
}

// HTTPRequest observes one request. route must be a route pattern (e.g.
// /devices/{deviceId}), never a raw path; nonstandard methods are counted as "other".
func (m *Metrics) HTTPRequest(method, route string, status int, d time.Duration) {
	m.httpChildren.get([3]string{Method(method), route, statusClass(status)}).Observe(d.Seconds())
}

// RateLimited counts one request refused by the named limit.
func (m *Metrics) RateLimited(limit string) {
	m.rateLimited.WithLabelValues(limit).Inc()
}

// AuditLost counts one audit record the sink could not write.
func (m *Metrics) AuditLost() { m.auditLost.Inc() }

// statusClasses are the status classes by status/100, so labelling allocates nothing.
var statusClasses = [...]string{1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return statusClasses[status/100]
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
