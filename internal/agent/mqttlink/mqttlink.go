// Package mqttlink keeps an MQTT 3.1.1 connection to IoT Hub (or an IoT Edge gateway)
// with the tokens the keeper provides: it connects with the token's MQTT profile over
// TLS on 8883 or WebSocket on 443, publishes telemetry at least once, receives
// cloud-to-device messages, and when a fresh token arrives it reconnects with it —
// before the old one expires, so the hub never has to drop the link for an expired
// token.
package mqttlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
)

// ErrNoProfile means the token carries no MQTT profile (an Event Hubs hub, say).
var ErrNoProfile = errors.New("the token has no MQTT profile")

// TokenSource provides the current token; *token.Holder plus the keeper's Invalidate
// make one.
type TokenSource interface {
	// Current returns the token (ok false while there is none) and a channel closed
	// when it is replaced.
	Current() (t token.Token, changed <-chan struct{}, ok bool)
	// Invalidate reports that the broker refused the current token.
	Invalidate()
}

// Delivery is a cloud-to-device message.
type Delivery struct {
	Topic   string
	Payload []byte
}

// Options configure a Link.
type Options struct {
	Source TokenSource
	// Messages are published to the token's telemetry topic.
	Messages <-chan telemetry.Message
	// OnC2D receives cloud-to-device messages; nil means do not subscribe.
	OnC2D func(Delivery)
	// DialAddr, when set, is the host:port dialled instead of the profile's; TLS still
	// verifies the profile's server name.
	DialAddr string
	// RootCAs is the operator's trust; nil means the system roots. The token's caCert
	// is trusted in addition.
	RootCAs *x509.CertPool
	// QoS of telemetry: 0 or 1 (default 1, at least once).
	QoS          byte
	KeepAlive    time.Duration
	CleanSession bool
	// Properties are added to every message's property bag.
	Properties map[string]string
	// Backoff paces reconnection attempts.
	Backoff backoff.Policy
	// Timeout bounds connecting and waiting for a PUBACK.
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// Stats count what a Link did.
type Stats struct {
	// Connects counts accepted connections; Rotations those made because a new token
	// arrived; Lost the connections that broke; Refused the CONNACKs refusing the
	// credentials; Published the acknowledged messages; Received the C2D messages.
	Connects, Rotations, Lost, Refused, Published, Received int
}

// Link is one device's MQTT connection.
type Link struct {
	o   Options
	log *slog.Logger

	mu    sync.Mutex
	stats Stats
}

// New returns a Link for o.
func New(o Options) *Link {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 60 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Backoff.Min == 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: 2 * time.Minute}
	}
	if o.QoS > 1 {
		o.QoS = 1 // IoT Hub does not support QoS 2
	}
	return &Link{o: o, log: o.Logger.With("link", "mqtt")}
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

func (l *Link) count(f func(*Stats)) {
	l.mu.Lock()
	f(&l.stats)
	l.mu.Unlock()
}

type endReason int

const (
	endCtx endReason = iota
	endRotated
	endLost
)

// Run keeps the link up until ctx ends; it returns nil then, or an error that retrying
// cannot fix (no MQTT profile).
func (l *Link) Run(ctx context.Context) error {
	var (
		pending  *telemetry.Message
		failures int
	)
	for ctx.Err() == nil {
		tok, changed, ok := token.AwaitValid(ctx, l.o.Source.Current, l.o.Now, l.log)
		if !ok {
			return nil
		}
		if tok.Response.Mqtt == nil {
			return ErrNoProfile
		}
		cl, lost, err := l.connect(ctx, tok)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
				l.count(func(s *Stats) { s.Refused++ })
				l.o.Source.Invalidate()
			}
			d := l.o.Backoff.Delay(failures, 0)
			l.log.Warn("connect failed", "error", err.Error(), "attempt", failures, "retryIn", d.Round(time.Millisecond).String())
			token.Sleep(ctx, d, changed) // a new token is worth trying at once
			continue
		}
		failures = 0
		l.count(func(s *Stats) { s.Connects++ })
		l.log.Info("connected", "host", tok.Response.Mqtt.Host, "transport", string(tok.Response.Mqtt.Transport),
			"tokenValidFor", tok.Remaining(l.o.Now()).Round(time.Second).String())

		reason, err := l.serve(ctx, cl, tok, changed, lost, &pending)
		switch reason {
		case endCtx:
			cl.Disconnect(250)
			return nil
		case endRotated:
			l.count(func(s *Stats) { s.Rotations++ })
			l.log.Info("new token; reconnecting with it", "oldTokenValidFor", tok.Remaining(l.o.Now()).Round(time.Millisecond).String())
			cl.Disconnect(250)
		case endLost:
			l.count(func(s *Stats) { s.Lost++ })
			l.log.Warn("connection lost", "error", err.Error(), "tokenValidFor", tok.Remaining(l.o.Now()).Round(time.Millisecond).String())
			cl.Disconnect(0)
			failures = 1
			token.Sleep(ctx, l.o.Backoff.Delay(1, 0), nil)
		}
	}
	return nil
}

// serve publishes and waits until the context ends, the token is replaced or the
// connection breaks. A message not yet acknowledged stays in *pending for the next
// connection.
func (l *Link) serve(ctx context.Context, cl paho.Client, tok token.Token, changed <-chan struct{}, lost <-chan error, pending **telemetry.Message) (endReason, error) {
	expired := time.NewTimer(max(0, tok.Remaining(l.o.Now())))
	defer expired.Stop()
	for {
		if *pending != nil {
			if err := l.publish(cl, tok, **pending, lost); err != nil {
				return endLost, err
			}
			*pending = nil
		}
		select {
		case <-ctx.Done():
			return endCtx, nil
		case <-changed:
			return endRotated, nil
		case err := <-lost:
			return endLost, err
		case <-expired.C:
			// No fresh token arrived in time (the service is down): the hub drops the
			// link at expiry; the reconnect then waits for a new token.
			l.log.Warn("token expired on an open connection; the hub will close it")
		case m, ok := <-l.o.Messages:
			if !ok {
				l.o.Messages = nil // input ended; keep the link for C2D
				continue
			}
			*pending = &m
		}
	}
}

func (l *Link) publish(cl paho.Client, tok token.Token, m telemetry.Message, lost <-chan error) error {
	topic := tok.Response.Mqtt.Topics.Publish + PropertyBag(l.o.Properties, m.Properties)
	t := cl.Publish(topic, l.o.QoS, false, m.Body)
	timeout := time.NewTimer(l.o.Timeout)
	defer timeout.Stop()
	select {
	case <-t.Done():
	case err := <-lost:
		return err
	case <-timeout.C:
		return fmt.Errorf("no PUBACK within %v", l.o.Timeout)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	l.count(func(s *Stats) { s.Published++ })
	return nil
}

func (l *Link) connect(ctx context.Context, tok token.Token) (paho.Client, <-chan error, error) {
	p := tok.Response.Mqtt
	serverName, caCert := p.Host, ""
	if p.Tls != nil {
		serverName = p.Tls.ServerName
		if p.Tls.CaCert != nil {
			caCert = *p.Tls.CaCert
		}
	}
	tlsConf, err := tlsconf.ForBroker(l.o.RootCAs, caCert, serverName)
	if err != nil {
		return nil, nil, err
	}
	addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	if l.o.DialAddr != "" {
		addr = l.o.DialAddr
	}
	lost := make(chan error, 1)
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
			select {
			case lost <- err:
			default:
			}
		}).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
			defer cancel()
			if p.Transport == "ws" {
				return wsconn.Dial(dctx, p.Url, "mqtt", tlsConf, l.o.DialAddr)
			}
			d := &tls.Dialer{Config: tlsConf}
			return d.DialContext(dctx, "tcp", addr)
		})
	cl := paho.NewClient(opts)
	t := cl.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		cl.Disconnect(0)
		return nil, nil, ctx.Err()
	}
	if err := t.Error(); err != nil {
		return nil, nil, err
	}
	if l.o.OnC2D != nil && len(p.Topics.Subscribe) > 0 {
		// Subscribe before the link counts as up, so no C2D message falls into a gap.
		filters := make(map[string]byte, len(p.Topics.Subscribe))
		for _, f := range p.Topics.Subscribe {
			filters[f] = 1
		}
		st := cl.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) {
			l.count(func(s *Stats) { s.Received++ })
			l.o.OnC2D(Delivery{Topic: m.Topic(), Payload: m.Payload()})
		})
		if !st.WaitTimeout(l.o.Timeout) || st.Error() != nil {
			cl.Disconnect(0)
			return nil, nil, fmt.Errorf("subscribe to C2D: %v", st.Error())
		}
	}
	return cl, lost, nil
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
