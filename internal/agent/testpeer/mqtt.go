package testpeer

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/mochitls"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// MQTTOptions configure a broker.
type MQTTOptions struct {
	// Hub is the IoT Hub host name tokens and user names must carry.
	Hub string
	// Cert is the broker's TLS certificate.
	Cert tls.Certificate
	// Keys are the devices' SAS keys (decoded), by device ID.
	Keys map[string][]byte
}

// Published is one telemetry message the broker accepted.
type Published struct {
	ClientID string
	Topic    string
	Payload  []byte
	// Properties is the topic's property bag, decoded.
	Properties url.Values
}

// MQTTBroker is a mochi-mqtt broker that authenticates like IoT Hub: the password is a
// SAS token that must verify with the device's key, be scoped to exactly
// {hub}/devices/{clientId} without skn, and not be expired; the user name must be
// {hub}/{clientId}/?api-version=2021-04-12. It drops a connection the moment its token
// expires (IoT Hub does, after a grace period; this broker allows none), and lets a
// device publish only to its own telemetry topic and subscribe only to its own C2D topic.
// Like IoT Hub it keeps each cloud-to-device message until the device acknowledges it
// (PUBACK), and sends the unacknowledged ones again when the device subscribes again.
type MQTTBroker struct {
	// TLSAddr and WSAddr are where it listens (MQTT over TLS, and over WebSocket with
	// TLS at /$iothub/websocket).
	TLSAddr, WSAddr string

	srv  *mqtt.Server
	opts MQTTOptions
	ws   *http.Server

	mu        sync.Mutex
	accepted  int
	refused   map[string]int
	expired   int
	denied    int
	published []Published
	passwords []string
	timers    map[*mqtt.Client]*time.Timer

	c2dNext     int
	c2dPending  map[string][]c2dMessage      // device -> messages not yet acknowledged
	c2dInflight map[string]map[uint16]string // device -> packet ID -> message ID
}

type c2dMessage struct {
	id      string
	payload []byte
}

// Tokens returns every token the broker accepted, for tests that scan logs for them.
func (b *MQTTBroker) Tokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.passwords...)
}

// Errors the broker's auth reports (keys of Refused).
const (
	RefusedExpired   = "expired"
	RefusedSignature = "signature"
	RefusedScope     = "scope"
	RefusedUsername  = "username"
	RefusedUnknown   = "unknown device"
	RefusedMalformed = "malformed"
)

var errTokenExpired = errors.New("SAS token expired")

// StartMQTT starts a broker on loopback; it stops when the test ends.
func StartMQTT(tb testing.TB, o MQTTOptions) *MQTTBroker {
	tb.Helper()
	b := &MQTTBroker{opts: o, refused: map[string]int{}, timers: map[*mqtt.Client]*time.Timer{},
		c2dPending: map[string][]c2dMessage{}, c2dInflight: map[string]map[uint16]string{}}
	b.srv = mochitls.New(tb, newAuthHook(b))
	tlsConf := &tls.Config{Certificates: []tls.Certificate{o.Cert}, MinVersion: tls.VersionTLS12}
	b.TLSAddr = mochitls.Listen(tb, b.srv, mochitls.Listener{ID: "tls", TLS: tlsConf})
	// WebSocket: IoT Hub's path and subprotocol, fed into the same broker.
	mux := http.NewServeMux()
	mux.HandleFunc("/$iothub/websocket", func(w http.ResponseWriter, r *http.Request) {
		c, err := acceptWS(w, r, "mqtt")
		if err != nil {
			return
		}
		_ = b.srv.EstablishConnection("ws", c)
	})
	b.WSAddr, b.ws = mochitls.ListenWS(tb, b.srv, "ws", tlsConf, mux)
	mochitls.Serve(tb, b.srv, func() { b.ws.Close() })
	return b
}

// C2D sends a cloud-to-device message to a device (its message ID in the property bag,
// $.mid) and keeps it until the device acknowledges it.
func (b *MQTTBroker) C2D(deviceID string, payload []byte) error {
	b.mu.Lock()
	b.c2dNext++
	m := c2dMessage{id: strconv.Itoa(b.c2dNext), payload: append([]byte(nil), payload...)}
	b.c2dPending[deviceID] = append(b.c2dPending[deviceID], m)
	b.mu.Unlock()
	return b.sendC2D(deviceID, m)
}

func (b *MQTTBroker) sendC2D(deviceID string, m c2dMessage) error {
	return b.srv.Publish("devices/"+deviceID+"/messages/devicebound/%24.mid="+m.id, m.payload, false, 1)
}

// C2DPending is how many cloud-to-device messages device has not acknowledged.
func (b *MQTTBroker) C2DPending(deviceID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.c2dPending[deviceID])
}

// MQTTStats summarise what the broker saw.
type MQTTStats struct {
	Accepted int
	Refused  map[string]int
	// ExpiredDrops counts connections closed because their token expired while open.
	ExpiredDrops int
	// Denied counts publishes or subscriptions outside the device's own topics.
	Denied int
}

// Stats returns a snapshot of the counters.
func (b *MQTTBroker) Stats() MQTTStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := make(map[string]int, len(b.refused))
	for k, v := range b.refused {
		r[k] = v
	}
	return MQTTStats{Accepted: b.accepted, Refused: r, ExpiredDrops: b.expired, Denied: b.denied}
}

// Published returns every telemetry message accepted so far.
func (b *MQTTBroker) Published() []Published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Published(nil), b.published...)
}

// Authenticate checks a CONNECT as IoT Hub does; it returns "" when accepted, else the
// reason, and the token's expiry.
func (b *MQTTBroker) Authenticate(clientID, username, password string, now time.Time) (string, time.Time) {
	key, ok := b.opts.Keys[clientID]
	if !ok {
		return RefusedUnknown, time.Time{}
	}
	if username != b.opts.Hub+"/"+clientID+"/?api-version="+signer.IoTHubAPIVersion {
		return RefusedUsername, time.Time{}
	}
	p, err := signer.Verify(password, key, now)
	switch {
	case errors.Is(err, signer.ErrExpired):
		return RefusedExpired, time.Time{}
	case errors.Is(err, signer.ErrBadSignature):
		return RefusedSignature, time.Time{}
	case err != nil:
		return RefusedMalformed, time.Time{}
	}
	if p.Resource != signer.IoTHubDeviceResource(b.opts.Hub, clientID) || p.PolicyName != "" {
		return RefusedScope, time.Time{}
	}
	return "", time.Unix(p.Expiry, 0)
}

type authHook struct {
	mochitls.Hook
	b *MQTTBroker
}

func newAuthHook(b *MQTTBroker) *authHook {
	return &authHook{Hook: mochitls.Hook{Name: "iothub-sas", Events: []byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect, mqtt.OnPublish,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnSubscribed,
	}}, b: b}
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.b
	reason, exp := b.Authenticate(cl.ID, string(pk.Connect.Username), string(pk.Connect.Password), time.Now())
	b.mu.Lock()
	defer b.mu.Unlock()
	if reason != "" {
		b.refused[reason]++
		return false
	}
	b.accepted++
	b.passwords = append(b.passwords, string(pk.Connect.Password))
	b.timers[cl] = time.AfterFunc(time.Until(exp), func() {
		b.mu.Lock()
		b.expired++
		b.mu.Unlock()
		cl.Stop(errTokenExpired)
	})
	return true
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if t, ok := h.b.timers[cl]; ok {
		t.Stop()
		delete(h.b.timers, cl)
	}
	delete(h.b.c2dInflight, cl.ID) // unacknowledged messages stay pending
}

// OnQosPublish notes which packet carries which C2D message.
func (h *authHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	_, id, ok := strings.Cut(pk.TopicName, "/messages/devicebound/%24.mid=")
	if !ok {
		return
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if h.b.c2dInflight[cl.ID] == nil {
		h.b.c2dInflight[cl.ID] = map[uint16]string{}
	}
	h.b.c2dInflight[cl.ID][pk.PacketID] = id
}

// OnQosComplete: the device acknowledged a C2D message; it is no longer kept.
func (h *authHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	id, ok := h.b.c2dInflight[cl.ID][pk.PacketID]
	if !ok {
		return
	}
	delete(h.b.c2dInflight[cl.ID], pk.PacketID)
	h.b.c2dPending[cl.ID] = slices.DeleteFunc(h.b.c2dPending[cl.ID], func(m c2dMessage) bool { return m.id == id })
}

// OnSubscribed sends a device's unacknowledged C2D messages again when it subscribes.
func (h *authHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	h.b.mu.Lock()
	pending := slices.Clone(h.b.c2dPending[cl.ID])
	h.b.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	go func() {
		for _, m := range pending {
			_ = h.b.sendC2D(cl.ID, m)
		}
	}()
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	var ok bool
	if write {
		ok = strings.HasPrefix(topic, "devices/"+cl.ID+"/messages/events/")
	} else {
		ok = strings.HasPrefix(topic, "devices/"+cl.ID+"/messages/devicebound/")
	}
	if !ok && !cl.Net.Inline {
		h.b.mu.Lock()
		h.b.denied++
		h.b.mu.Unlock()
	}
	return ok || cl.Net.Inline
}

func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	bag := strings.TrimPrefix(pk.TopicName, "devices/"+cl.ID+"/messages/events/")
	props, _ := url.ParseQuery(bag)
	h.b.mu.Lock()
	h.b.published = append(h.b.published, Published{ClientID: cl.ID, Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...), Properties: props})
	h.b.mu.Unlock()
	return pk, nil
}
