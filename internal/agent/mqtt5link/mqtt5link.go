// Package mqtt5link keeps an MQTT 5 connection (Eclipse paho.golang) to a broker that
// authenticates by JWT — an Azure Event Grid namespace, EMQX, HiveMQ, Mosquitto with a
// JWT plugin — with the tokens the keeper provides. When the token's profile names an
// authentication method (e.g. CUSTOM-JWT), the token goes as the CONNECT's
// authentication data and each new token is put on the open connection with an AUTH
// packet, reason code 0x19 (re-authenticate), so the session never drops; without one
// the token is the password and a new token means a clean reconnect. TLS offers the
// profile's ALPN protocols. Tokens whose profile is not MQTT 5 go to a fallback, the
// MQTT 3.1.1 link, so one `-link mqtt` serves every hub kind. The reconnect loop is
// link.Loop; this package dials, publishes, re-authenticates and closes.
package mqtt5link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Version is the profile's protocolVersion this link speaks.
const Version = "5"

// reasonReAuthenticate is the AUTH reason code that starts a re-authentication.
const reasonReAuthenticate = 0x19

// ErrNoProfile means the token carries no MQTT profile.
var ErrNoProfile = errors.New("the token has no MQTT profile")

// errProfileChanged ends a connection whose new token is for another endpoint, client
// or way of authenticating: it cannot be put on the open connection.
var errProfileChanged = errors.New("the new token's MQTT profile differs from the connection's; reconnecting")

// errClosed is the Err of a connection the link closed.
var errClosed = errors.New("connection closed")

// Delivery is a message the broker sent to one of the profile's subscribe topics.
type Delivery struct {
	Topic   string
	Payload []byte
}

// Fallback dials tokens whose profile is not MQTT 5; *mqttlink.Link is one.
type Fallback interface {
	link.Dialer
	Stats() mqttlink.Stats
}

var _ Fallback = (*mqttlink.Link)(nil)

// Options configure a Link. Common's Properties go into every message as MQTT 5 user
// properties; its Timeout also bounds re-authenticating.
type Options struct {
	link.Common
	// OnMessage receives messages on the profile's subscribe topics; nil means do not
	// subscribe.
	OnMessage func(Delivery)
	// Fallback dials tokens whose profile says MQTT 3.1.1; nil refuses them.
	Fallback Fallback
	// QoS of telemetry: 0, or 1 for at least once (what the agent uses); more is 1.
	QoS       byte
	KeepAlive time.Duration
	// CleanStart discards the broker's session at every connect; otherwise the session
	// outlives a connection by an hour, so subscriptions survive a reconnect.
	CleanStart bool
}

// Stats count what a Link did.
type Stats struct {
	// Connects counts accepted connections; Rotations those made because a new token
	// arrived; ReAuths the tokens put on an open connection by AUTH; Lost the
	// connections that broke; Refused the refused tokens; Published the acknowledged
	// messages (over either protocol); Rejected the messages the broker refused by
	// reason code (dropped, not retried); Received the messages delivered.
	Connects, Rotations, ReAuths, Lost, Refused, Published, Rejected, Received int
}

// Link is one device's MQTT connection: a link.Loop with this package's Dialer.
type Link struct {
	o    Options
	loop *link.Loop
	log  *slog.Logger

	published, rejected, received atomic.Int64
}

var (
	_ link.Dialer  = (*Link)(nil)
	_ link.Conn    = (*conn)(nil)
	_ link.Renewer = (*authConn)(nil)
)

// New returns a Link for o.
func New(o Options) *Link {
	o.Common = o.WithDefaults()
	o.QoS, o.KeepAlive = mqttlink.SessionDefaults(o.QoS, o.KeepAlive)
	l := &Link{o: o, log: o.Logger.With("link", "mqtt")}
	l.loop = o.Loop(l, l.log)
	return l
}

// Run keeps the link up until ctx ends; it returns nil then, or ErrNoProfile.
func (l *Link) Run(ctx context.Context) error { return l.loop.Run(ctx) }

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	s := l.loop.Stats()
	out := Stats{Connects: s.Connects, Rotations: s.Rotations, ReAuths: s.Renewals, Lost: s.Lost, Refused: s.Refused,
		Published: int(l.published.Load()), Rejected: int(l.rejected.Load()), Received: int(l.received.Load())}
	if l.o.Fallback != nil {
		f := l.o.Fallback.Stats()
		out.Published += f.Published
		out.Received += f.Received
	}
	return out
}

// IsMQTT5 reports whether tok's MQTT profile asks for MQTT 5.
func IsMQTT5(tok token.Token) bool {
	return tok.Response.Mqtt != nil && tok.Response.Mqtt.ProtocolVersion == Version
}

// Endpoint returns the host and transport of tok's MQTT profile, or ErrNoProfile.
func (l *Link) Endpoint(tok token.Token) (host, transport string, err error) {
	p := tok.Response.Mqtt
	switch {
	case p == nil:
		return "", "", ErrNoProfile
	case !IsMQTT5(tok) && l.o.Fallback != nil:
		return l.o.Fallback.Endpoint(tok)
	case !IsMQTT5(tok):
		return "", "", fmt.Errorf("MQTT %s profile: this link speaks MQTT 5 only", p.ProtocolVersion)
	}
	return p.Host, string(p.Transport), nil
}

// Dial connects with tok's MQTT profile (or has the fallback do it for a profile that
// is not MQTT 5) and subscribes to its topics when asked to. A refusal of the token is
// an error wrapping link.ErrRefused.
func (l *Link) Dial(ctx context.Context, tok token.Token) (link.Conn, error) {
	if !IsMQTT5(tok) {
		if l.o.Fallback == nil {
			_, _, err := l.Endpoint(tok)
			return nil, err
		}
		return l.o.Fallback.Dial(ctx, tok)
	}
	p := tok.Response.Mqtt
	tlsConf, err := tlsconf.ForProfile(l.o.RootCAs, p.Tls, p.Host)
	if err != nil {
		return nil, err
	}
	if p.Alpn != nil {
		tlsConf.NextProtos = slices.Clone(*p.Alpn)
	}
	tlsConf.Certificates = tok.ClientCertificates() // a device certificate, if that is the credential
	broker := link.Broker{Host: p.Host, Port: p.Port, Transport: string(p.Transport), URL: p.Url, Subprotocol: "mqtt",
		DialAddr: l.o.DialAddr, VerifyTime: l.o.VerifyTime}
	dctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	nc, err := broker.Dial(dctx, tlsConf)
	if err != nil {
		return nil, link.CertificateRefused(err, tok) // TLS 1.2: the alert ends the handshake
	}
	c := &conn{l: l, tok: tok, topic: p.Topics.Publish, lost: make(chan struct{})}
	c.cl = paho.NewClient(paho.ClientConfig{
		Conn:               packets.NewThreadSafeConn(nc),
		AuthHandler:        c,
		PacketTimeout:      l.o.Timeout,
		OnPublishReceived:  []func(paho.PublishReceived) (bool, error){c.received},
		OnClientError:      func(err error) { c.fail(err) },
		OnServerDisconnect: func(d *paho.Disconnect) { c.fail(disconnectError(d)) },
	})
	ca, err := c.cl.Connect(dctx, connectPacket(p, tok.Response.Token, l.o))
	if err != nil {
		if ca != nil && (ca.ReasonCode == 0x86 || ca.ReasonCode == 0x87) {
			return nil, fmt.Errorf("%w: CONNACK reason %#x", link.ErrRefused, ca.ReasonCode)
		}
		return nil, link.CertificateRefused(fmt.Errorf("connect: %w", err), tok) // TLS 1.3: after it
	}
	if l.o.OnMessage != nil && len(p.Topics.Subscribe) > 0 {
		// Subscribe before the link counts as up, so no message falls into a gap.
		subs := make([]paho.SubscribeOptions, len(p.Topics.Subscribe))
		for i, f := range p.Topics.Subscribe {
			subs[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
		}
		if _, err := c.cl.Subscribe(dctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			c.Close(false)
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	if p.AuthMethod != nil {
		return &authConn{conn: c}, nil
	}
	return c, nil
}

// connectPacket is the CONNECT for profile p and token tok: the token as enhanced
// authentication data when the profile names a method, else as the password.
func connectPacket(p *oapi.MqttProfile, tok string, o Options) *paho.Connect {
	cp := &paho.Connect{ClientID: p.ClientId, KeepAlive: uint16(o.KeepAlive / time.Second), CleanStart: o.CleanStart,
		Properties: &paho.ConnectProperties{}}
	if p.Username != "" {
		cp.Username, cp.UsernameFlag = p.Username, true
	}
	if p.AuthMethod != nil {
		cp.Properties.AuthMethod, cp.Properties.AuthData = *p.AuthMethod, []byte(tok)
	} else if p.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(p.Password), true
	}
	if !o.CleanStart {
		expiry := uint32(time.Hour / time.Second)
		cp.Properties.SessionExpiryInterval = &expiry
	}
	return cp
}

// disconnectError says why the broker sent DISCONNECT; reasons that refuse the
// credential wrap link.ErrRefused, so the loop asks for a new token.
func disconnectError(d *paho.Disconnect) error {
	reason := ""
	if d.Properties != nil && d.Properties.ReasonString != "" {
		reason = " (" + d.Properties.ReasonString + ")"
	}
	switch d.ReasonCode {
	case 0x86, 0x87, 0x8C:
		return fmt.Errorf("%w: the broker disconnected with reason %#x%s", link.ErrRefused, d.ReasonCode, reason)
	}
	return fmt.Errorf("the broker disconnected with reason %#x%s", d.ReasonCode, reason)
}

// Properties returns base and msg properties (msg's win) as MQTT 5 user properties,
// sorted by key.
func Properties(base, msg map[string]string) paho.UserProperties {
	if len(base) == 0 && len(msg) == 0 {
		return nil
	}
	all := maps.Clone(base)
	if all == nil {
		all = make(map[string]string, len(msg))
	}
	maps.Copy(all, msg)
	keys := slices.Sorted(maps.Keys(all))
	up := make(paho.UserProperties, len(keys))
	for i, k := range keys {
		up[i] = paho.UserProperty{Key: k, Value: all[k]}
	}
	return up
}

// conn is one MQTT 5 connection.
type conn struct {
	l     *Link
	cl    *paho.Client
	topic string

	mu  sync.Mutex
	tok token.Token // the token the connection authenticated with last

	lost chan struct{}
	once sync.Once
	err  error // set before lost closes
}

func (c *conn) fail(err error) {
	c.once.Do(func() { c.err = err; close(c.lost) })
}

func (c *conn) Done() <-chan struct{} { return c.lost }
func (c *conn) Err() error            { return c.err }

// Close ends the connection. paho.golang always sends a DISCONNECT first; on a broken
// connection that write fails at once, so graceful makes no difference.
func (c *conn) Close(bool) {
	c.fail(errClosed)
	_ = c.cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// current returns the token the connection authenticated with last.
func (c *conn) current() token.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok
}

// quotaExceeded is the PUBACK reason code 0x97: the message is refused for now, not for
// what it is.
const quotaExceeded = 0x97

// Send publishes m and waits for its PUBACK (QoS 1). A PUBACK refusing the message
// (e.g. 0x87, not authorized) drops it: the connection is fine, and sending it again
// would be refused again. But 0x97 (quota exceeded: Event Grid throttling a session's
// publishes) refuses it for now only: the message is kept, and the link sends it
// again after its backoff.
func (c *conn) Send(ctx context.Context, m telemetry.Message) error {
	pctx, cancel := context.WithTimeout(ctx, c.l.o.Timeout)
	defer cancel()
	pub := &paho.Publish{Topic: c.topic, QoS: c.l.o.QoS, Payload: m.Body}
	if up := Properties(c.l.o.Properties, m.Properties); up != nil {
		pub.Properties = &paho.PublishProperties{User: up}
	}
	r, err := c.cl.Publish(pctx, pub)
	select {
	case <-c.lost:
		return c.err
	default:
	}
	if r != nil && r.ReasonCode == quotaExceeded {
		return fmt.Errorf("publish: the broker is over a quota (PUBACK %#x); sent again after the backoff", r.ReasonCode)
	}
	if r != nil && r.ReasonCode >= 0x80 {
		c.l.rejected.Add(1)
		c.l.log.Warn("the broker refused a message; dropped", "topic", c.topic, "reason", fmt.Sprintf("%#x", r.ReasonCode))
		return nil
	}
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	c.l.published.Add(1)
	return nil
}

func (c *conn) received(pr paho.PublishReceived) (bool, error) {
	c.l.received.Add(1)
	c.l.o.OnMessage(Delivery{Topic: pr.Packet.Topic, Payload: pr.Packet.Payload})
	return true, nil
}

// Authenticate implements paho.Auther: a JWT method has no challenge, so a broker
// that asks to continue gets the token again.
func (c *conn) Authenticate(a *paho.Auth) *paho.Auth {
	method := ""
	if a.Properties != nil {
		method = a.Properties.AuthMethod
	}
	return &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: method, AuthData: []byte(c.current().Response.Token)}}
}

// Authenticated implements paho.Auther.
func (c *conn) Authenticated() {}

// authConn is a connection authenticated by enhanced authentication: it takes a new
// token by re-authenticating.
type authConn struct{ *conn }

// Renew re-authenticates with tok (AUTH, reason 0x19, the token as authentication
// data). A refusal wraps link.ErrRefused; the broker then closes the connection.
func (c *authConn) Renew(ctx context.Context, tok token.Token) error {
	old, p := c.current().Response.Mqtt, tok.Response.Mqtt
	if !IsMQTT5(tok) || p.AuthMethod == nil || *p.AuthMethod != *old.AuthMethod || p.Host != old.Host ||
		p.Port != old.Port || p.ClientId != old.ClientId || p.Username != old.Username || p.Topics.Publish != old.Topics.Publish {
		return errProfileChanged
	}
	actx, cancel := context.WithTimeout(ctx, c.l.o.Timeout)
	defer cancel()
	r, err := c.cl.Authenticate(actx, &paho.Auth{ReasonCode: reasonReAuthenticate,
		Properties: &paho.AuthProperties{AuthMethod: *p.AuthMethod, AuthData: []byte(tok.Response.Token)}})
	if err != nil {
		return fmt.Errorf("re-authenticate: %w", err)
	}
	if !r.Success {
		return fmt.Errorf("%w: re-authentication refused with reason %#x", link.ErrRefused, r.ReasonCode)
	}
	c.mu.Lock()
	c.tok = tok
	c.mu.Unlock()
	return nil
}
