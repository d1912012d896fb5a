// Package mqttlink keeps an MQTT 3.1.1 connection to IoT Hub (or an IoT Edge gateway),
// or to any broker a token's MQTT profile describes (AWS IoT Core through a custom
// authorizer, a JWT-authenticated broker), with the tokens the keeper provides: it
// connects with the profile over TLS (offering the profile's ALPN protocols) or
// WebSocket, publishes telemetry at least once, receives cloud-to-device messages, and
// when a fresh token arrives it reconnects with it — before the old one expires, so the
// broker never has to drop the link for an expired token. The reconnect loop is
// link.Loop; this package dials, publishes and closes.
package mqttlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// ErrNoProfile means the token carries no MQTT profile (an Event Hubs hub, say).
var ErrNoProfile = errors.New("the token has no MQTT profile")

// Delivery is a cloud-to-device message.
type Delivery struct {
	Topic   string
	Payload []byte
}

// Options configure a Link. Common's Properties go into IoT Hub's property bag (other
// brokers take the topic as it is).
type Options struct {
	link.Common
	// OnC2D receives cloud-to-device messages; nil means do not subscribe.
	OnC2D func(Delivery)
	// OnC2DAck, when set, receives them instead and decides whether each is
	// acknowledged: one it returns false for is not, so the hub keeps it and sends it
	// again (IoT Hub: when the device subscribes on a later connection).
	OnC2DAck func(Delivery) bool
	// QoS of telemetry: 0 or 1 (default 1, at least once).
	QoS          byte
	KeepAlive    time.Duration
	CleanSession bool
}

// Stats count what a Link did.
type Stats struct {
	// Connects counts accepted connections; Rotations those made because a new token
	// arrived; Lost the connections that broke; Refused the CONNACKs refusing the
	// credentials; Published the acknowledged messages; Received the C2D messages.
	Connects, Rotations, Lost, Refused, Published, Received int
}

// Link is one device's MQTT connection: a link.Loop with this package's Dialer.
type Link struct {
	o    Options
	loop *link.Loop

	published, received atomic.Int64
}

var (
	_ link.Dialer = (*Link)(nil)
	_ link.Conn   = (*conn)(nil)
)

// New returns a Link for o.
func New(o Options) *Link {
	o.Common = o.WithDefaults()
	o.QoS, o.KeepAlive = SessionDefaults(o.QoS, o.KeepAlive)
	l := &Link{o: o}
	l.loop = o.Loop(l, o.Logger.With("link", "mqtt"))
	return l
}

// SessionDefaults completes an MQTT link's session options (this package's and
// mqtt5link's): QoS at most 1 (IoT Hub does not support QoS 2), keep-alive 60 s when
// unset.
func SessionDefaults(qos byte, keepAlive time.Duration) (byte, time.Duration) {
	if keepAlive == 0 {
		keepAlive = 60 * time.Second
	}
	return min(qos, 1), keepAlive
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	s := l.loop.Stats()
	return Stats{Connects: s.Connects, Rotations: s.Rotations, Lost: s.Lost, Refused: s.Refused,
		Published: int(l.published.Load()), Received: int(l.received.Load())}
}

// Run keeps the link up until ctx ends; it returns nil then, or ErrNoProfile.
func (l *Link) Run(ctx context.Context) error { return l.loop.Run(ctx) }

// Endpoint returns the host and transport of tok's MQTT profile, or ErrNoProfile.
func (l *Link) Endpoint(tok token.Token) (host, transport string, err error) {
	p := tok.Response.Mqtt
	if p == nil {
		return "", "", ErrNoProfile
	}
	return p.Host, string(p.Transport), nil
}

// conn is one MQTT connection.
type conn struct {
	l     *Link
	cl    paho.Client
	topic string
	// bag says the topic takes IoT Hub's property bag.
	bag bool

	lost chan struct{}
	once sync.Once
	err  error // set before lost closes
}

func (c *conn) Done() <-chan struct{} { return c.lost }
func (c *conn) Err() error            { return c.err }

func (c *conn) Close(graceful bool) {
	if graceful {
		c.cl.Disconnect(250)
		return
	}
	c.cl.Disconnect(0)
}

// Send publishes m and waits for its PUBACK (QoS 1).
func (c *conn) Send(_ context.Context, m telemetry.Message) error {
	topic := c.topic
	if c.bag {
		topic += PropertyBag(c.l.o.Properties, m.Properties)
	}
	t := c.cl.Publish(topic, c.l.o.QoS, false, m.Body)
	timeout := time.NewTimer(c.l.o.Timeout)
	defer timeout.Stop()
	select {
	case <-t.Done():
	case <-c.lost:
		return c.err
	case <-timeout.C:
		return fmt.Errorf("no PUBACK within %v", c.l.o.Timeout)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	c.l.published.Add(1)
	return nil
}

// Dial connects with tok's MQTT profile and subscribes to C2D messages when asked to.
// A CONNACK refusing the credentials is an error wrapping link.ErrRefused.
func (l *Link) Dial(ctx context.Context, tok token.Token) (link.Conn, error) {
	p := tok.Response.Mqtt
	tlsConf, err := tlsconf.ForMQTT(l.o.RootCAs, p)
	if err != nil {
		return nil, err
	}
	tlsConf.Certificates = tok.ClientCertificates() // a device certificate, if that is the credential
	broker := link.Broker{Host: p.Host, Port: p.Port, Transport: string(p.Transport), URL: p.Url, Subprotocol: "mqtt",
		DialAddr: l.o.DialAddr, VerifyTime: l.o.VerifyTime}
	c := &conn{l: l, topic: p.Topics.Publish, bag: tok.Response.Kind == oapi.Iothub, lost: make(chan struct{})}
	opts := paho.NewClientOptions().
		AddBroker(p.Url).
		SetClientID(p.ClientId).
		SetUsername(p.Username).
		SetPassword(p.Password).
		SetProtocolVersion(4).
		SetCleanSession(l.o.CleanSession).
		SetKeepAlive(l.o.KeepAlive).
		SetConnectTimeout(l.o.Timeout).
		SetWriteTimeout(l.o.Timeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			c.once.Do(func() { c.err = err; close(c.lost) })
		}).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
			defer cancel()
			return broker.Dial(dctx, tlsConf)
		})
	onC2D := l.c2dHandler()
	if onC2D != nil {
		// A resumed session (clean session off) can deliver before SUBSCRIBE below
		// registers its route; without a default handler paho would drop such a
		// message.
		opts.SetDefaultPublishHandler(onC2D).SetAutoAckDisabled(l.o.OnC2DAck != nil)
	}
	c.cl = paho.NewClient(opts)
	t := c.cl.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		c.cl.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := t.Error(); err != nil {
		if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			return nil, fmt.Errorf("%w: %w", link.ErrRefused, err)
		}
		return nil, link.CertificateRefused(err, tok)
	}
	if onC2D != nil && len(p.Topics.Subscribe) > 0 {
		// Subscribe before the link counts as up, so no C2D message falls into a gap.
		filters := make(map[string]byte, len(p.Topics.Subscribe))
		for _, f := range p.Topics.Subscribe {
			filters[f] = 1
		}
		st := c.cl.SubscribeMultiple(filters, onC2D)
		if !st.WaitTimeout(l.o.Timeout) || st.Error() != nil {
			c.cl.Disconnect(0)
			return nil, fmt.Errorf("subscribe to C2D: %v", st.Error())
		}
	}
	return c, nil
}

// c2dHandler hands a C2D message to OnC2DAck (acknowledging it only when that says
// so) or OnC2D (always acknowledged); nil when neither is set.
func (l *Link) c2dHandler() paho.MessageHandler {
	switch {
	case l.o.OnC2DAck != nil:
		return func(_ paho.Client, m paho.Message) {
			l.received.Add(1)
			if l.o.OnC2DAck(Delivery{Topic: m.Topic(), Payload: m.Payload()}) {
				m.Ack()
			}
		}
	case l.o.OnC2D != nil:
		return func(_ paho.Client, m paho.Message) {
			l.received.Add(1)
			l.o.OnC2D(Delivery{Topic: m.Topic(), Payload: m.Payload()})
		}
	}
	return nil
}

// PropertyBag encodes properties as IoT Hub reads them at the end of the telemetry
// topic: key=value pairs joined by &, each part percent-encoded, keys sorted; base
// entries are overridden by msg entries.
func PropertyBag(base, msg map[string]string) string {
	if len(base) == 0 && len(msg) == 0 {
		return ""
	}
	all := make(map[string]string, len(base)+len(msg))
	for k, v := range base {
		all[k] = v
	}
	for k, v := range msg {
		all[k] = v
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(escape(k))
		b.WriteByte('=')
		b.WriteString(escape(all[k]))
	}
	return b.String()
}

func escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
