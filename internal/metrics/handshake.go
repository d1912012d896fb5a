package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokensvc/tokensvc/internal/handshake"
)

// HandshakeStats is what the TLS handshake collector reads.
type HandshakeStats interface {
	Stats() handshake.Stats
}

// RegisterHandshakes exposes the TLS handshake bound's state, read at scrape time.
func (m *Metrics) RegisterHandshakes(h HandshakeStats) {
	m.reg.MustRegister(handshakeCollector{h})
}

type handshakeCollector struct{ h HandshakeStats }

var (
	handshakesInProgress = prometheus.NewDesc(namespace+"_tls_handshakes_in_progress", "TLS handshakes holding a slot of the handshake bound.", nil, nil)
	handshakesWaited     = prometheus.NewDesc(namespace+"_tls_handshakes_waited_total", "TLS handshakes that waited for a slot.", nil, nil)
	handshakesBusy       = prometheus.NewDesc(namespace+"_tls_handshakes_refused_total", "TLS handshakes failed after waiting too long for a slot.", nil, nil)
)

func (handshakeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{handshakesInProgress, handshakesWaited, handshakesBusy} {
		ch <- d
	}
}

func (hc handshakeCollector) Collect(ch chan<- prometheus.Metric) {
	st := hc.h.Stats()
	ch <- prometheus.MustNewConstMetric(handshakesInProgress, prometheus.GaugeValue, float64(st.InUse))
	ch <- prometheus.MustNewConstMetric(handshakesWaited, prometheus.CounterValue, float64(st.Waited))
	ch <- prometheus.MustNewConstMetric(handshakesBusy, prometheus.CounterValue, float64(st.Busy))
}
