// Package gateway is the agent's gateway mode: legacy devices (leaves) that hold no
// credential hand their telemetry to the gateway's local intakes (package intake); every
// accepted message goes into the on-disk queue (package queue) and from there to IoT Hub
// under the leaf's own identity with the leaf's own token (package leaftoken, one POST
// /token/batch for many leaves) — over one AMQP connection that multiplexes every leaf
// (package amqpmux) or one MQTT connection per leaf (mqttlink). A message leaves the
// queue only when the hub has accepted it. Cloud-to-device messages come back to the
// leaf's local MQTT topic (over AMQP, a leaf's C2D link is attached while the leaf is
// subscribed to its C2D topic on the local broker; the hub keeps its messages meanwhile).
//
// A few workers serve every leaf's link (see pump): a leaf is served when its token
// changes, its queue gains a message, its connection breaks or its backoff ends, one
// message at a time and in order, so a leaf whose token is refused holds up no other
// leaf — without a goroutine per leaf waiting for any of that.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
	"unique"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/amqpmux"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/leaftoken"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/periodic"
)

// Upstream protocols.
const (
	AMQP = "amqp"
	MQTT = "mqtt"
)

// Options configure a Gateway.
type Options struct {
	// Leaves are the leaf IDs with their local MQTT passwords ("" for none).
	Leaves intake.Leaves
	// Batcher fetches the leaves' tokens (the gateway's *fetch.Client).
	Batcher leaftoken.Batcher
	// Queue is the opened on-disk queue; the Gateway closes it when Run ends.
	Queue *queue.Queue

	// Upstream is AMQP (one connection for every leaf) or MQTT (one per leaf).
	Upstream string
	// DialAddr, when set, is dialled instead of the profiles' host:port.
	DialAddr string
	RootCAs  *x509.CertPool
	// VerifyTime is when the hub's certificate is checked (nil: the system clock);
	// tokenagent passes the fetch client's corrected, floored clock.
	VerifyTime func() time.Time
	// Properties are added to every message.
	Properties map[string]string

	// MQTTAddr, when set, is the local broker's listen address; MQTTTLS makes it TLS.
	MQTTAddr string
	MQTTTLS  *tls.Config
	// UDPAddr and LineAddr, when set, are the line intake's UDP and TCP addresses;
	// LineFormat is how a line's payload becomes a message.
	UDPAddr, LineAddr string
	LineFormat        telemetry.Format

	// TokenCoalesce is leaftoken's coalescing window (0: its default).
	TokenCoalesce time.Duration
	Backoff       backoff.Policy
	// Timeout bounds each upstream connect and send (0: 30 s).
	Timeout time.Duration
	// StatsEvery logs the counters this often (0: every 5 min).
	StatsEvery time.Duration
	// Workers serve the leaves' links (default 128, amqpmux's telemetry link bound): at
	// most this many leaves connect or send at once. Each send waits for the hub's
	// acceptance, so the burst rate is about Workers divided by that round trip (64
	// workers measured half the rate of 128 for the same peak memory).
	Workers int
	Logger  *slog.Logger
}

// Gateway bridges leaves to the hub.
type Gateway struct {
	o      Options
	log    *slog.Logger
	tokens *leaftoken.Keeper
	mux    *amqpmux.Mux
	broker *intake.MQTT
	lines  *intake.Lines
	udp    net.PacketConn
	tcp    net.Listener
	pump   *pump
}

// New builds the gateway and opens its listeners (so their addresses are known before
// Run).
func New(o Options) (*Gateway, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Backoff.Min <= 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: 2 * time.Minute}
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.StatsEvery <= 0 {
		o.StatsEvery = 5 * time.Minute
	}
	if o.Workers <= 0 {
		o.Workers = 128
	}
	if len(o.Leaves) == 0 || o.Batcher == nil || o.Queue == nil {
		return nil, errors.New("gateway: leaves, a batcher and a queue are required")
	}
	if o.MQTTAddr == "" && o.UDPAddr == "" && o.LineAddr == "" {
		return nil, errors.New("gateway: no intake (MQTT, UDP or line address)")
	}
	ids := make([]string, 0, len(o.Leaves))
	for id := range o.Leaves {
		ids = append(ids, id)
	}
	g := &Gateway{o: o, log: o.Logger.With("mode", "gateway")}
	// Leaf links log warnings only (MQTT: each leaf has its own connection) or errors
	// only (AMQP: the shared connection logs its own state, refused tokens are logged
	// by leaftoken, and a thousand leaves backing off together say nothing the
	// counters do not).
	leafLevel := slog.LevelWarn
	if o.Upstream == AMQP {
		leafLevel = slog.LevelError
	}
	leafLog := slog.New(minLevel{Handler: g.log.Handler(), min: leafLevel})
	g.pump = newPump(o.Queue, o.Backoff, leafLog, o.Workers, len(ids))
	g.tokens = leaftoken.New(leaftoken.Options{Batcher: o.Batcher, Leaves: ids, Coalesce: o.TokenCoalesce,
		Backoff: o.Backoff, Trim: trimFor(o.Upstream), OnToken: g.pump.scheduleToken, Logger: g.log})
	if err := g.listen(func(leaf string, on bool) {
		if g.mux != nil {
			g.mux.SetC2D(leaf, on)
		}
	}); err != nil {
		g.closeListeners()
		return nil, err
	}
	var onC2D func(string, telemetry.Message)
	if g.broker != nil {
		onC2D = func(leaf string, m telemetry.Message) { g.deliver(leaf, m) }
	}
	switch o.Upstream {
	case AMQP:
		g.mux = amqpmux.New(amqpmux.Options{DialAddr: o.DialAddr, RootCAs: o.RootCAs, VerifyTime: o.VerifyTime, Properties: o.Properties,
			OnC2D: onC2D, Backoff: o.Backoff, Timeout: o.Timeout, Logger: g.log})
	case MQTT:
	default:
		g.closeListeners()
		return nil, fmt.Errorf("gateway: upstream %q: want amqp or mqtt", o.Upstream)
	}
	for _, id := range ids {
		src := g.tokens.Source(id)
		var d link.Dialer
		if g.mux != nil {
			d = g.mux.Leaf(id)
		} else {
			mo := mqttlink.Options{
				Common: link.Common{Source: src, DialAddr: o.DialAddr, RootCAs: o.RootCAs, VerifyTime: o.VerifyTime, Properties: o.Properties,
					Backoff: o.Backoff, Timeout: o.Timeout, Logger: leafLog.With("leaf", id)},
				QoS:          1,
				CleanSession: true,
			}
			if g.broker != nil {
				// Every leaf's connection receives its C2D messages, the leaf connected
				// locally or not: one that reaches no local subscription is not
				// acknowledged, so the hub keeps it and sends it again later.
				mo.OnC2DAck = func(d mqttlink.Delivery) bool { return g.deliver(id, c2dFromTopic(id, d)) }
			}
			d = mqttlink.New(mo)
		}
		g.pump.add(id, d, src)
	}
	o.Queue.OnPut(g.pump.schedule)
	return g, nil
}

// MQTTAddr, UDPAddr and LineAddr are where the intakes listen ("" when off).
func (g *Gateway) MQTTAddr() string {
	if g.broker == nil {
		return ""
	}
	return g.broker.Addr()
}

// UDPAddr is the UDP intake's address ("" when off).
func (g *Gateway) UDPAddr() string {
	if g.udp == nil {
		return ""
	}
	return g.udp.LocalAddr().String()
}

// LineAddr is the TCP line intake's address ("" when off).
func (g *Gateway) LineAddr() string {
	if g.tcp == nil {
		return ""
	}
	return g.tcp.Addr().String()
}

// listen opens the intakes; wanted is told when a leaf subscribes to its C2D topic on
// the local broker and when it no longer is.
func (g *Gateway) listen(wanted func(string, bool)) error {
	o := g.o
	var err error
	if o.MQTTAddr != "" {
		if g.broker, err = intake.ListenMQTT(intake.MQTTOptions{Addr: o.MQTTAddr, TLS: o.MQTTTLS, Leaves: o.Leaves,
			Sink: o.Queue, OnC2DWanted: wanted, Logger: g.log}); err != nil {
			return err
		}
	}
	if o.UDPAddr != "" || o.LineAddr != "" {
		g.lines = intake.NewLines(intake.LineOptions{Leaves: o.Leaves, Sink: o.Queue, Format: o.LineFormat, Logger: g.log})
	}
	if o.UDPAddr != "" {
		if g.udp, err = net.ListenPacket("udp", o.UDPAddr); err != nil {
			return fmt.Errorf("udp intake: %w", err)
		}
	}
	if o.LineAddr != "" {
		if g.tcp, err = net.Listen("tcp", o.LineAddr); err != nil {
			return fmt.Errorf("line intake: %w", err)
		}
	}
	return nil
}

func (g *Gateway) closeListeners() {
	if g.broker != nil {
		g.broker.Close()
	}
	if g.udp != nil {
		g.udp.Close()
	}
	if g.tcp != nil {
		g.tcp.Close()
	}
}

// Run serves until ctx ends or a task fails; it then stops the intakes, the leaves'
// links and the shared connection, and closes the queue (what is in it stays for the
// next run).
func (g *Gateway) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.tokens.Run(ctx) })
	if g.broker != nil {
		eg.Go(func() error {
			stop := context.AfterFunc(ctx, func() { g.broker.Close() })
			defer stop()
			if err := g.broker.Serve(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("mqtt intake: %w", err)
			}
			<-ctx.Done()
			return nil
		})
	}
	if g.udp != nil {
		eg.Go(func() error { return g.lines.ServeUDP(ctx, g.udp) })
	}
	if g.tcp != nil {
		eg.Go(func() error { return g.lines.ServeTCP(ctx, g.tcp) })
	}
	eg.Go(func() error { return g.pump.run(ctx) })
	eg.Go(func() error {
		return periodic.Run(ctx, g.o.StatsEvery, func(context.Context) { g.log.Info("gateway stats", g.statAttrs()...) })
	})
	g.log.Info("starting", "leaves", len(g.o.Leaves), "workers", g.o.Workers, "upstream", g.o.Upstream, "mqtt", g.MQTTAddr(),
		"udp", g.UDPAddr(), "line", g.LineAddr())
	err := eg.Wait()
	if g.mux != nil {
		g.mux.Close()
	}
	g.closeListeners()
	if cerr := g.o.Queue.Close(); cerr != nil && err == nil {
		err = cerr
	}
	g.log.Info("stopped", g.statAttrs()...)
	return err
}

// Stats are the gateway's counters.
type Stats struct {
	Queue  queue.Stats
	Tokens leaftoken.Stats
	Links  LinkStats
	MQTT   intake.MQTTStats
	Lines  intake.LineStats
	AMQP   amqpmux.Stats
}

// Stats returns a snapshot of every counter.
func (g *Gateway) Stats() Stats {
	s := Stats{Queue: g.o.Queue.Stats(), Tokens: g.tokens.Stats(), Links: g.pump.Stats()}
	if g.broker != nil {
		s.MQTT = g.broker.Stats()
	}
	if g.lines != nil {
		s.Lines = g.lines.Stats()
	}
	if g.mux != nil {
		s.AMQP = g.mux.Stats()
	}
	return s
}

func (g *Gateway) statAttrs() []any {
	s := g.Stats()
	return []any{"runtime", ReadRuntimeStats(), "queue", s.Queue, "tokens", s.Tokens, "links", s.Links, "mqttIntake", s.MQTT, "lineIntake", s.Lines, "amqp", s.AMQP}
}

// deliver hands a leaf's cloud-to-device message to its local topic and reports
// whether it did.
func (g *Gateway) deliver(leaf string, m telemetry.Message) bool {
	if err := g.broker.Deliver(leaf, m); err != nil {
		g.log.Warn("cloud-to-device message not delivered", "leaf", leaf, "error", err.Error())
		return false
	}
	return true
}

// trimFor returns what keeps of a leaf's token only what upstream uses: the other
// profiles and the connection string go, and the strings every leaf's token repeats
// (host, URL, TLS server name and CA certificate, CBS node) are shared. A thousand
// leaves' tokens otherwise hold ~4 MiB, mostly copies of the same CA certificate.
func trimFor(upstream string) func(token.Token) token.Token {
	return func(t token.Token) token.Token {
		r := &t.Response
		r.ConnectionString, r.Https = nil, nil
		if upstream == AMQP {
			r.Mqtt = nil
			if p := r.Amqp; p != nil {
				cp := *p
				cp.Host, cp.Url, cp.Cbs.Node, cp.Cbs.TokenType = intern(cp.Host), intern(cp.Url), intern(cp.Cbs.Node), intern(cp.Cbs.TokenType)
				cp.Tls = internTLS(cp.Tls)
				r.Amqp = &cp
			}
		} else {
			r.Amqp = nil
			if p := r.Mqtt; p != nil {
				cp := *p
				cp.Host, cp.Url = intern(cp.Host), intern(cp.Url)
				cp.Tls = internTLS(cp.Tls)
				r.Mqtt = &cp
			}
		}
		return t
	}
}

func intern(s string) string { return unique.Make(s).Value() }

func internTLS(t *oapi.TlsSettings) *oapi.TlsSettings {
	if t == nil {
		return nil
	}
	cp := oapi.TlsSettings{ServerName: intern(t.ServerName)}
	if t.CaCert != nil {
		ca := intern(*t.CaCert)
		cp.CaCert = &ca
	}
	return &cp
}

// c2dFromTopic reads the property bag of a C2D message from the hub's topic
// (devices/{id}/messages/devicebound/{bag}).
func c2dFromTopic(leaf string, d mqttlink.Delivery) telemetry.Message {
	return telemetry.Message{Body: d.Payload, Properties: intake.ParseBag(strings.TrimPrefix(d.Topic, intake.C2DTopic(leaf)))}
}
