// Package jwtpeer is a JWT-authenticating MQTT broker for tests, standing in for EMQX
// with JWKS authentication and for an Azure Event Grid namespace with custom JWT
// authentication: a mochi-mqtt broker over TLS on loopback whose auth hook verifies the
// device's JWT against the issuer's JWKS fetched over HTTP, takes it from the CONNECT
// password (MQTT 3.1.1 and 5) or from MQTT 5 enhanced authentication (CONNECT
// authentication method and data), accepts re-authentication (AUTH, reason 0x19) with
// a fresh token, drops a session whose token expires, and enforces an acl claim on
// PUBLISH and SUBSCRIBE. It also holds Issuer, an in-process issuer key ring. Only
// tests import it.
package jwtpeer

import (
	"context"
	"crypto/tls"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/mochitls"
)

// BrokerOptions configure a Broker.
type BrokerOptions struct {
	VerifyOptions
	// Cert is the broker's TLS certificate.
	Cert tls.Certificate
	// AuthMethod, when set, is the MQTT 5 enhanced authentication method a client must
	// use (the token is its authentication data; e.g. CUSTOM-JWT as Event Grid). When
	// empty the token is the CONNECT password and enhanced authentication is refused.
	AuthMethod string
	// ALPN, when set, are the TLS ALPN protocols the broker speaks; a client that
	// negotiates none of them is refused at the handshake.
	ALPN []string
}

// Published is one message the broker accepted from a client.
type Published struct {
	ClientID, Topic string
	Payload         []byte
	// Properties are its MQTT 5 user properties.
	Properties map[string]string
}

// BrokerStats summarise what the broker saw.
type BrokerStats struct {
	// Accepted counts CONNECTs accepted; ReAuths the re-authentications accepted;
	// Refused the refused CONNECTs and AUTHs by reason; ExpiredDrops the sessions
	// closed because their token expired; Denied the PUBLISHes and SUBSCRIBEs the acl
	// claim did not allow.
	Accepted, ReAuths int
	Refused           map[string]int
	ExpiredDrops      int
	Denied            int
	// NoALPN counts TLS handshakes refused for negotiating no ALPN protocol.
	NoALPN int
	// Throttled counts the PUBLISHes refused with PUBACK 0x97 on Throttle's command.
	Throttled int
}

// Broker is the stand-in broker.
type Broker struct {
	// Addr is where it listens for MQTT over TLS.
	Addr string

	o   BrokerOptions
	v   *Verifier
	srv *mqtt.Server

	mu        sync.Mutex
	stats     BrokerStats
	sessions  map[*mqtt.Client]*session
	published []Published
	accepted  []Verified
	tokens    []string
	throttle  int // PUBLISHes still to refuse with 0x97
}

// Throttle makes the broker refuse the next n QoS 1 PUBLISHes with PUBACK reason 0x97
// (quota exceeded), as Event Grid does over a session's publish rate.
func (b *Broker) Throttle(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.throttle += n
}

// session is what the broker keeps about one authenticated connection.
type session struct {
	method string // "" for password authentication
	v      Verified
	timer  *time.Timer
}

var (
	// errExpired is why the broker ends a session whose token expired.
	errExpired = errors.New("token expired without re-authentication")
	errNoALPN  = errors.New("the client negotiated no ALPN protocol")
)

// StartBroker fetches the JWKS and starts a broker on loopback; it stops when the test
// ends.
func StartBroker(tb testing.TB, o BrokerOptions) *Broker {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	v, err := NewVerifier(ctx, o.VerifyOptions)
	if err != nil {
		tb.Fatal(err)
	}
	b := &Broker{o: o, v: v, sessions: map[*mqtt.Client]*session{}, stats: BrokerStats{Refused: map[string]int{}}}
	b.srv = mochitls.New(tb, newHook(b))
	tlsConf := &tls.Config{Certificates: []tls.Certificate{o.Cert}, MinVersion: tls.VersionTLS12, NextProtos: o.ALPN}
	if len(o.ALPN) > 0 {
		tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol == "" {
				b.mu.Lock()
				b.stats.NoALPN++
				b.mu.Unlock()
				return errNoALPN
			}
			return nil
		}
	}
	b.Addr = mochitls.Listen(tb, b.srv, mochitls.Listener{ID: "tls", TLS: tlsConf})
	mochitls.Serve(tb, b.srv, nil)
	return b
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() BrokerStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Refused = maps.Clone(b.stats.Refused)
	return s
}

// Published returns the messages accepted so far.
func (b *Broker) Published() []Published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Published(nil), b.published...)
}

// Accepted returns the verified tokens of every accepted CONNECT and AUTH, in order.
func (b *Broker) Accepted() []Verified {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Verified(nil), b.accepted...)
}

// Tokens returns every token the broker accepted, for tests that scan logs for them.
func (b *Broker) Tokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.tokens...)
}

// Send publishes payload to topic from the broker itself (cloud to device).
func (b *Broker) Send(topic string, payload []byte) error {
	return b.srv.Publish(topic, payload, false, 1)
}

// authenticate verifies a CONNECT's token; it returns the session or the reason.
func (b *Broker) authenticate(cl *mqtt.Client, pk packets.Packet) (*session, string) {
	method := pk.Properties.AuthenticationMethod
	token := string(pk.Connect.Password)
	switch {
	case method != b.o.AuthMethod:
		return nil, RefusedMethod
	case method != "":
		token = string(pk.Properties.AuthenticationData)
	}
	v, reason := b.v.Verify(context.Background(), token, cl.ID)
	if reason != "" {
		return nil, reason
	}
	b.mu.Lock()
	b.tokens = append(b.tokens, token)
	b.mu.Unlock()
	return &session{method: method, v: v}, ""
}

// start records s for cl and arms the drop at its token's expiry.
func (b *Broker) start(cl *mqtt.Client, s *session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Accepted++
	b.accepted = append(b.accepted, s.v)
	b.sessions[cl] = s
	b.arm(cl, s)
}

// arm (with b.mu held) schedules the end of cl's session at its token's expiry.
func (b *Broker) arm(cl *mqtt.Client, s *session) {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = time.AfterFunc(s.v.ExpiresAt.Sub(b.o.now()), func() {
		b.mu.Lock()
		if b.sessions[cl] != s {
			b.mu.Unlock()
			return
		}
		b.stats.ExpiredDrops++
		b.mu.Unlock()
		if cl.Properties.ProtocolVersion == 5 {
			_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized) // Event Grid says why
			return
		}
		cl.Stop(errExpired)
	})
}

// reauthenticate handles an AUTH packet: a re-authentication (0x19) with the session's
// method and a fresh token for the same subject extends the session.
func (b *Broker) reauthenticate(cl *mqtt.Client, pk packets.Packet) error {
	b.mu.Lock()
	s := b.sessions[cl]
	b.mu.Unlock()
	refuse := func(reason string, code packets.Code) error {
		b.mu.Lock()
		b.stats.Refused[reason]++
		b.mu.Unlock()
		return code // the server answers with DISCONNECT carrying code
	}
	switch {
	case s == nil || s.method == "" || pk.Properties.AuthenticationMethod != s.method:
		return refuse(RefusedMethod, packets.ErrBadAuthenticationMethod)
	case pk.ReasonCode != packets.CodeReAuthenticate.Code:
		return refuse(RefusedMethod, packets.ErrProtocolViolationInvalidReason)
	}
	v, reason := b.v.Verify(context.Background(), string(pk.Properties.AuthenticationData), cl.ID)
	if reason == "" && v.Subject != s.v.Subject {
		reason = RefusedClientID
	}
	if reason != "" {
		return refuse(reason, packets.ErrNotAuthorized)
	}
	b.mu.Lock()
	s.v = v
	b.stats.ReAuths++
	b.tokens = append(b.tokens, string(pk.Properties.AuthenticationData))
	b.accepted = append(b.accepted, v)
	b.arm(cl, s)
	b.mu.Unlock()
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Auth},
		ReasonCode:  packets.CodeSuccess.Code,
		Properties:  packets.Properties{AuthenticationMethod: s.method},
	})
}

func (o BrokerOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}
