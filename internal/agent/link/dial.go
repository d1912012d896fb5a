package link

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
)

// Broker is where a token's profile says to connect.
type Broker struct {
	Host string
	Port int
	// Transport "ws" means WebSocket at URL with Subprotocol; anything else TLS over
	// TCP to Host:Port.
	Transport, URL, Subprotocol string
	// DialAddr, when set, is the host:port dialled instead; TLS still verifies the
	// profile's server name.
	DialAddr string
	// VerifyTime, when set, is the time the broker's certificate is checked at instead
	// of the system clock (Common.VerifyTime).
	VerifyTime func() time.Time
}

// Dial opens the TLS (or WebSocket over TLS) connection to b with conf.
func (b Broker) Dial(ctx context.Context, conf *tls.Config) (net.Conn, error) {
	if b.VerifyTime != nil {
		conf = conf.Clone()
		conf.Time = b.VerifyTime
	}
	if b.Transport == "ws" {
		return wsconn.Dial(ctx, b.URL, b.Subprotocol, conf, b.DialAddr)
	}
	addr := b.DialAddr
	if addr == "" {
		addr = net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
	}
	d := &tls.Dialer{Config: conf}
	return d.DialContext(ctx, "tcp", addr)
}
