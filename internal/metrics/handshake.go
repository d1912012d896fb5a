package metrics

import "github.com/tokensvc/tokensvc/internal/handshake"

// HandshakeStats is what the TLS handshake collector reads.
type HandshakeStats interface {
	Stats() handshake.Stats
}

// RegisterHandshakes exposes the TLS handshake bound's state, read at scrape time.
func (m *Metrics) RegisterHandshakes(h HandshakeStats) {
	type st = handshake.Stats
	m.reg.MustRegister(snapshotCollector[st]{stats: h.Stats, values: []snapshotValue[st]{
		gaugeOf("tls_handshakes_in_progress", "TLS handshakes holding a slot of the handshake bound.", func(s st) float64 { return float64(s.InUse) }),
		counterOf("tls_handshakes_waited_total", "TLS handshakes that waited for a slot.", func(s st) float64 { return float64(s.Waited) }),
		counterOf("tls_handshakes_refused_total", "TLS handshakes failed after waiting too long for a slot.", func(s st) float64 { return float64(s.Busy) }),
	}})
}
