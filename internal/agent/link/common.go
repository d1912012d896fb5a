package link

import (
	"crypto/x509"
	"log/slog"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// DefaultTimeout bounds connecting and each acknowledged send when Common.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// Common are the options every protocol link (mqttlink, mqtt5link, amqplink) takes.
type Common struct {
	Source TokenSource
	// Messages are sent in order, each until the peer accepts it; nil sends nothing.
	Messages <-chan telemetry.Message
	// DialAddr, when set, is the host:port dialled instead of the profile's; TLS still
	// verifies the profile's server name.
	DialAddr string
	// RootCAs is the operator's trust; nil means the system roots. The token's caCert is
	// trusted in addition.
	RootCAs *x509.CertPool
	// VerifyTime is the time brokers' certificates are checked at; nil means the system
	// clock. tokenagent passes the fetch client's (fetch.Client.VerifyTime: the device
	// clock corrected by the service's, never before the clock floor), so a board
	// booting at 1970 can connect once it has a token.
	VerifyTime func() time.Time
	// Properties are added to every message the way the protocol carries them (IoT
	// Hub's property bag, AMQP application-properties, MQTT 5 user properties).
	Properties map[string]string
	// Backoff paces reconnection attempts.
	Backoff backoff.Policy
	// Timeout bounds connecting, renewing and waiting for the peer to accept a message;
	// 0 means DefaultTimeout.
	Timeout time.Duration
	Now     func() time.Time
	// Logger is where the link logs; nil means slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with the logger and timeout filled in.
func (c Common) WithDefaults() Common {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Loop returns the reconnect loop of a link that dials with d and logs to log.
func (c Common) Loop(d Dialer, log *slog.Logger) *Loop {
	return New(d, Options{Source: c.Source, Messages: c.Messages, Backoff: c.Backoff, Now: c.Now, Logger: log})
}
