// Package certpeer is a mutual-TLS MQTT broker for tests, standing in for AWS IoT Core's
// X.509 endpoint (port 443 with ALPN x-amzn-mqtt-ca, or 8883), an IoT Hub or Event Grid
// namespace authenticating devices by CA-signed certificate, or any mTLS broker: a
// mochi-mqtt broker over TLS on loopback that completes the handshake before MQTT,
// requires the configured ALPN protocol, requires a client certificate for client
// authentication chaining to the given CA pool and valid now, takes the device's
// identity from the certificate's CN (the MQTT client ID must be the same), and lets a
// device publish and subscribe only below its own topic prefix. Only tests import it.
package certpeer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/tokensvc/tokensvc/internal/mochitls"
)

// DefaultTopicPrefix is the device's own topic space when Options leave it empty (the
// awsiot kind's default telemetry topic lies under it).
const DefaultTopicPrefix = "devices/{deviceId}/"

// Options configure a Broker.
type Options struct {
	// Cert is the broker's TLS certificate.
	Cert tls.Certificate
	// Roots are the CAs device certificates must chain to (the hub's CA).
	Roots *x509.CertPool
	// ALPN, when set, are the protocols the listener speaks and requires one of (AWS IoT
	// Core's 443 role for certificates: x-amzn-mqtt-ca); a handshake negotiating none
	// is refused.
	ALPN []string
	// TopicPrefix is a device's own topic space; {deviceId} stands for the CN.
	TopicPrefix string
	// Now is the clock certificates are checked against (default time.Now).
	Now func() time.Time
}

// Reasons a connection is refused (keys of Stats.Refused).
const (
	RefusedALPN      = "alpn"
	RefusedNoCert    = "no client certificate"
	RefusedExpired   = "certificate expired or not yet valid"
	RefusedUnknownCA = "certificate not issued by a trusted CA"
	RefusedInvalid   = "certificate invalid"
	RefusedHandshake = "tls handshake"
	RefusedClientID  = "client id is not the certificate's CN"
)

// refusal is a handshake refused for a reason the broker counts.
type refusal struct{ reason string }

func (r refusal) Error() string { return "certpeer: refused: " + r.reason }

// Published is one message the broker accepted from a device.
type Published struct {
	ClientID, Topic string
	Payload         []byte
}

// Session is one accepted connection: who, and with which certificate.
type Session struct {
	ClientID string
	// Serial is the certificate's serial number (hex); NotAfter its expiry.
	Serial   string
	NotAfter time.Time
}

// Stats summarise what the broker saw.
type Stats struct {
	// Accepted counts accepted CONNECTs; Refused the refused handshakes and CONNECTs by
	// reason; Denied the publishes and subscriptions outside a device's own topics.
	Accepted int
	Refused  map[string]int
	Denied   int
}

// Broker is the stand-in.
type Broker struct {
	// Addr is where it listens for MQTT over TLS.
	Addr string

	o   Options
	srv *mqtt.Server

	mu        sync.Mutex
	stats     Stats
	sessions  []Session
	published []Published
}

// Start starts a broker on loopback; it stops when the test ends.
func Start(tb testing.TB, o Options) *Broker {
	tb.Helper()
	if o.TopicPrefix == "" {
		o.TopicPrefix = DefaultTopicPrefix
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	b := &Broker{o: o, stats: Stats{Refused: map[string]int{}}}
	b.srv = mochitls.New(tb, newHook(b))
	conf := &tls.Config{
		Certificates: []tls.Certificate{o.Cert}, MinVersion: tls.VersionTLS12, NextProtos: o.ALPN,
		// Verified here rather than by crypto/tls, so each refusal has its reason.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: b.verify,
	}
	b.Addr = mochitls.Listen(tb, b.srv, mochitls.Listener{ID: "mtls", TLS: conf, Refused: func(err error) {
		var r refusal
		if !errors.As(err, &r) {
			r.reason = RefusedHandshake
		}
		b.refuse(r.reason)
	}})
	mochitls.Serve(tb, b.srv, nil)
	return b
}

// verify checks a handshake: ALPN, then the client certificate.
func (b *Broker) verify(cs tls.ConnectionState) error {
	if len(b.o.ALPN) > 0 && !slices.Contains(b.o.ALPN, cs.NegotiatedProtocol) {
		return refusal{RefusedALPN}
	}
	if len(cs.PeerCertificates) == 0 {
		return refusal{RefusedNoCert}
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: b.o.Roots, Intermediates: inter, CurrentTime: b.o.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return refusal{RefusedExpired}
	case errors.As(err, &unknown):
		return refusal{RefusedUnknownCA}
	default:
		return refusal{RefusedInvalid}
	}
}

func (b *Broker) refuse(reason string) {
	b.mu.Lock()
	b.stats.Refused[reason]++
	b.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Refused = maps.Clone(b.stats.Refused)
	return s
}

// Await returns the counters once cond holds for them, or fails the test after 10 s: the
// broker counts a refused handshake on its side of the connection, which can be after
// the client saw the refusal.
func (b *Broker) Await(tb testing.TB, cond func(Stats) bool) Stats {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := b.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("stand-in: %+v: not the expected counts", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Sessions returns every accepted connection, in order.
func (b *Broker) Sessions() []Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sessions)
}

// Published returns the messages accepted so far.
func (b *Broker) Published() []Published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.published)
}

// Send publishes payload to topic from the broker itself (cloud to device).
func (b *Broker) Send(topic string, payload []byte) error {
	return b.srv.Publish(topic, payload, false, 1)
}

// own says whether topic (or filter) lies in the device's own topic space.
func (b *Broker) own(id, topic string) bool {
	return strings.HasPrefix(topic, strings.ReplaceAll(b.o.TopicPrefix, "{deviceId}", id))
}
