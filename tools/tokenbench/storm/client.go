package storm

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
)

// newClient opens a new TCP and TLS connection for every request: no keep-alive, no
// session cache (so no resumption), HTTP/1.1. dials counts the connections.
func newClient(tlsCfg *tls.Config, dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: tlsCfg,
		// No handshake timeout of its own: the exchange's -timeout bounds it, so a slow
		// handshake fails by the server's deadline (5 s in tokensvc) rather than ours.
		TLSHandshakeTimeout: 0,
		DisableKeepAlives:   true,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr}
}

// clientTLSConfig is the devices' TLS client configuration: trust caFile (or nothing
// at all with insecure), no session tickets or cache, and unless pq the classic key
// exchanges a device TLS stack offers.
func clientTLSConfig(caFile string, insecure, pq bool) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		ClientSessionCache:     nil,
	}
	if !pq {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	if insecure {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	pool, err := tlsconf.LoadPool(caFile) // as the agent reads its -ca-file
	if err != nil {
		return nil, fmt.Errorf("-cacert: %w", err)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
