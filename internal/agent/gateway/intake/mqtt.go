// Package intake is where legacy devices (leaves) hand their telemetry to the gateway:
// an embedded MQTT broker on the LAN (mochi-mqtt; plain TCP or TLS) and a line intake
// (UDP datagrams or TCP lines of "{leafId} {payload}") for radios and serial bridges.
// A message is acknowledged to the leaf (MQTT PUBACK) only once the Sink has stored it.
//
// Local MQTT topics, one set per leaf, as IoT Hub names them:
//
//	devices/{leafId}/messages/events/{property bag}   publish telemetry (QoS 0 or 1)
//	devices/{leafId}/messages/devicebound/#           subscribe: cloud-to-device messages
//
// A leaf connects with its leaf ID as client ID (and the local password the operator
// set for it, when one is set) and may publish and subscribe only under its own ID; its
// will, when it sets one, must be on its own events topic too.
package intake

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/mochistop"
)

// Sink stores an accepted message; *queue.Queue implements it. Put returns once the
// message is safe (on disk): only then is the leaf told it was accepted.
type Sink interface {
	Put(leaf string, m telemetry.Message) error
}

// Leaves says which leaf IDs exist and their local MQTT passwords ("" for none).
type Leaves map[string]string

// Known reports whether id is a configured leaf.
func (l Leaves) Known(id string) bool {
	_, ok := l[id]
	return ok
}

// MQTTOptions configure the local broker.
type MQTTOptions struct {
	// Addr is the TCP listen address (host:port).
	Addr string
	// TLS, when set, makes the listener TLS.
	TLS    *tls.Config
	Leaves Leaves
	Sink   Sink
	// OnC2DWanted, when set, is told when a leaf comes to want its cloud-to-device
	// messages — a live connection of it is subscribed to its C2D topic (true) — and
	// when it no longer does (false). A connected leaf that never subscribes (one that
	// only sends telemetry) never wants them.
	OnC2DWanted func(leaf string, wanted bool)
	Logger      *slog.Logger
}

// MQTTStats count what the local broker did.
type MQTTStats struct {
	// Connects counts accepted leaf connections; Refused the refused ones (unknown
	// client ID, wrong password); Denied publishes and subscriptions outside the
	// leaf's own topics; Accepted the stored messages; Failed those the Sink could not
	// store (not acknowledged; the leaf sends them again); Delivered the C2D messages
	// handed to the local broker for a subscribed leaf, Undelivered those for a leaf
	// without a local subscription (nobody received them).
	Connects, Refused, Denied, Accepted, Failed, Delivered, Undelivered int
}

// MQTT is the local broker.
type MQTT struct {
	o    MQTTOptions
	srv  *mqtt.Server
	ln   net.Listener
	log  *slog.Logger
	stat counter.Set[MQTTStats]

	closeOnce sync.Once

	wantMu sync.Mutex
	wanted map[string]bool // leaves that want their C2D messages, as last reported
}

// MaxMessage bounds a leaf's message (IoT Hub's own limit is 256 KiB).
const MaxMessage = 256 << 10

// MaxPendingWrites bounds the packets queued for one leaf's connection; beyond it the
// broker drops a C2D message for that leaf (counted by mochi, as a missed delivery).
const MaxPendingWrites = 64

// EventsTopic is leaf's local telemetry topic (publish, with an optional property bag
// after it); C2DTopic the prefix of its cloud-to-device topics.
func EventsTopic(leaf string) string { return "devices/" + leaf + "/messages/events/" }

// C2DTopic is the prefix of leaf's local cloud-to-device topics.
func C2DTopic(leaf string) string { return "devices/" + leaf + "/messages/devicebound/" }

// ListenMQTT opens the listener; Serve then serves it.
func ListenMQTT(o MQTTOptions) (*MQTT, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxMessage + 1024 // the message plus a topic and headers
	caps.MaximumQos = 1                        // as IoT Hub
	caps.RetainAvailable = 0
	// mochi gives every client an outbound queue of this many packets, allocated at
	// connect (8,192 by default: 64 KiB of pointers per client, 64 MiB for 1,000
	// leaves). A leaf's outbound traffic is its C2D messages, which come one at a time
	// per leaf (each is accepted at the hub only after it was handed here) and of which
	// IoT Hub keeps at most 50 per device; acknowledgements do not use this queue.
	caps.MaximumClientWritesPending = MaxPendingWrites
	m := &MQTT{o: o, log: o.Logger.With("intake", "mqtt"), wanted: map[string]bool{}}
	m.srv = mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		// Per leaf connection mochi runs two goroutines (a reader with a 16 KiB stack,
		// 32 KiB while it handles a packet; a writer with 4–8 KiB) and keeps a read
		// buffer of this size (default 2 KiB; 256 B holds a few small PUBLISHes, and a
		// larger packet is read straight into its own buffer).
		ClientNetReadBufferSize: 256,
		Logger:                  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := m.srv.AddHook(&leafHook{m: m}, nil); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt intake: %w", err)
	}
	if o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	m.ln = ln
	if err := m.srv.AddListener(listeners.NewNet(leavesListener, ln)); err != nil {
		ln.Close()
		return nil, err
	}
	return m, nil
}

// leavesListener is the ID of the broker's only network listener.
const leavesListener = "leaves"

// Addr is where the broker listens.
func (m *MQTT) Addr() string { return m.ln.Addr().String() }

// Stats returns a snapshot of the counters.
func (m *MQTT) Stats() MQTTStats { return m.stat.Snapshot() }

// Serve serves leaves until Close.
func (m *MQTT) Serve() error {
	m.log.Info("listening", "addr", m.Addr(), "tls", m.o.TLS != nil, "leaves", len(m.o.Leaves))
	return m.srv.Serve()
}

// Close disconnects every leaf and stops the listener; later calls do nothing.
func (m *MQTT) Close() error {
	var err error
	m.closeOnce.Do(func() { err = mochistop.Close(m.srv, leavesListener) })
	return err
}

// ErrNoSubscriber means a cloud-to-device message matched no subscription of its leaf:
// nobody would receive it.
var ErrNoSubscriber = errors.New("the leaf has no local subscription to its cloud-to-device topic")

// Deliver publishes a cloud-to-device message to leaf's local topic (QoS 1), with m's
// properties as the topic's property bag. A leaf that is not subscribed (a persistent
// session's subscription counts, while it is offline too) misses it: Deliver then
// returns ErrNoSubscriber.
func (m *MQTT) Deliver(leaf string, msg telemetry.Message) error {
	topic := C2DTopic(leaf) + mqttlink.PropertyBag(nil, msg.Properties)
	if len(m.srv.Topics.Subscribers(topic).Subscriptions) == 0 {
		m.stat.Update(func(s *MQTTStats) { s.Undelivered++ })
		return fmt.Errorf("deliver to %s: %w", leaf, ErrNoSubscriber)
	}
	if err := m.srv.Publish(topic, msg.Body, false, 1); err != nil {
		return fmt.Errorf("deliver to %s: %w", leaf, err)
	}
	m.stat.Update(func(s *MQTTStats) { s.Delivered++ })
	return nil
}

type leafHook struct {
	mqtt.HookBase
	m *MQTT
}

func (h *leafHook) ID() string { return "gateway-leaves" }

func (h *leafHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
		mqtt.OnSessionEstablished, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnDisconnect}, []byte{b})
}

// OnSessionEstablished (a resumed session keeps its subscriptions), OnSubscribed,
// OnUnsubscribed and OnDisconnect check whether the leaf wants its C2D messages.
func (h *leafHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.m.recheck(cl.ID, nil) }

// OnSubscribed: see OnSessionEstablished.
func (h *leafHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) { h.m.recheck(cl.ID, nil) }

// OnUnsubscribed: see OnSessionEstablished.
func (h *leafHook) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) { h.m.recheck(cl.ID, nil) }

// OnDisconnect: see OnSessionEstablished; cl is going away.
func (h *leafHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.m.recheck(cl.ID, cl) }

// recheck reports a change in whether leaf wants its C2D messages: whether its live
// connection (after a takeover, the new one) is subscribed to its C2D topic. gone is a
// connection on its way out. Reports are made under the lock, so they arrive in order.
func (m *MQTT) recheck(leaf string, gone *mqtt.Client) {
	if m.o.OnC2DWanted == nil || !m.o.Leaves.Known(leaf) {
		return
	}
	m.wantMu.Lock()
	defer m.wantMu.Unlock()
	now := m.wantsC2D(leaf, gone)
	if now != m.wanted[leaf] {
		m.wanted[leaf] = now
		m.o.OnC2DWanted(leaf, now)
	}
}

func (m *MQTT) wantsC2D(leaf string, gone *mqtt.Client) bool {
	cl, ok := m.srv.Clients.Get(leaf)
	if !ok || cl == gone || cl.Closed() {
		return false
	}
	for filter := range cl.State.Subscriptions.GetAll() {
		if strings.HasPrefix(filter, C2DTopic(leaf)) {
			return true
		}
	}
	return false
}

// OnConnectAuthenticate admits configured leaves only, each with its local password
// when the operator set one. A will (last will and testament) must be on the leaf's own
// events topic, as IoT Hub requires: the broker publishes a will itself when the
// connection breaks, past OnACLCheck, so a will elsewhere would let a leaf forge a
// message on any topic — another leaf's cloud-to-device topic among them.
func (h *leafHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	want, ok := h.m.o.Leaves[cl.ID]
	if ok && want != "" {
		ok = subtle.ConstantTimeCompare([]byte(want), pk.Connect.Password) == 1
	}
	if !ok {
		h.m.stat.Update(func(s *MQTTStats) { s.Refused++ })
		h.m.log.Warn("leaf connection refused", "clientId", cl.ID, "remote", cl.Net.Remote)
		return false
	}
	if pk.Connect.WillFlag && !ownEvents(cl.ID, pk.Connect.WillTopic) {
		h.m.stat.Update(func(s *MQTTStats) { s.Refused++ })
		h.m.log.Warn("leaf connection refused: will outside the leaf's own events topic", "clientId", cl.ID,
			"remote", cl.Net.Remote, "willTopic", pk.Connect.WillTopic)
		return false
	}
	h.m.stat.Update(func(s *MQTTStats) { s.Connects++ })
	return true
}

// OnACLCheck lets a leaf publish to its own events topic and subscribe to its own C2D
// topics only.
func (h *leafHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	var ok bool
	if write {
		ok = ownEvents(cl.ID, topic)
	} else {
		ok = strings.HasPrefix(topic, C2DTopic(cl.ID))
	}
	if !ok {
		h.m.stat.Update(func(s *MQTTStats) { s.Denied++ })
		h.m.log.Warn("leaf denied a topic outside its own", "clientId", cl.ID, "topic", topic, "publish", write)
	}
	return ok
}

// ownEvents reports whether topic is leaf's events topic, with or without a property bag.
func ownEvents(leaf, topic string) bool {
	return strings.HasPrefix(topic, EventsTopic(leaf)) || topic == strings.TrimSuffix(EventsTopic(leaf), "/")
}

// OnPublish stores the leaf's message before the broker acknowledges it; a message the
// Sink cannot store is not acknowledged. Nothing is routed to other clients.
func (h *leafHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	bag := strings.TrimPrefix(strings.TrimPrefix(pk.TopicName, strings.TrimSuffix(EventsTopic(cl.ID), "/")), "/")
	msg := telemetry.Message{Body: append([]byte(nil), pk.Payload...), Properties: ParseBag(bag)}
	if err := h.m.o.Sink.Put(cl.ID, msg); err != nil {
		h.m.stat.Update(func(s *MQTTStats) { s.Failed++ })
		h.m.log.Error("leaf message not stored; not acknowledged", "clientId", cl.ID, "error", err.Error())
		return pk, packets.ErrRejectPacket
	}
	h.m.stat.Update(func(s *MQTTStats) { s.Accepted++ })
	return pk, packets.CodeSuccessIgnore
}

// ParseBag decodes an IoT Hub property bag (k=v&k2=v2, percent-encoded); a part that
// does not decode is dropped.
func ParseBag(bag string) map[string]string {
	if bag == "" {
		return nil
	}
	vals, err := url.ParseQuery(bag)
	if err != nil && len(vals) == 0 {
		return nil
	}
	out := make(map[string]string, len(vals))
	for k, v := range vals {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}

var errUnknownLeaf = errors.New("unknown leaf")
