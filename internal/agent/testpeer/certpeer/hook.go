package certpeer

import (
	"bytes"
	"crypto/tls"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/mochitls"
)

// hook is the broker's mochi hook: the identity at CONNECT, the topic rule on every
// publish, subscription and delivery, and the record of what was published.
type hook struct {
	mochitls.Hook
	b *Broker
}

func newHook(b *Broker) *hook {
	return &hook{Hook: mochitls.Hook{Name: "mtls", Events: []byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
	}}, b: b}
}

// OnConnectAuthenticate takes the identity from the verified certificate: the client ID
// must be its CN. User name and password are ignored, as AWS IoT Core ignores them on
// its certificate endpoints.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok || len(tc.ConnectionState().PeerCertificates) == 0 {
		h.b.refuse(RefusedNoCert)
		return false
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	if leaf.Subject.CommonName != cl.ID {
		h.b.refuse(RefusedClientID)
		return false
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	h.b.stats.Accepted++
	h.b.sessions = append(h.b.sessions, Session{ClientID: cl.ID, Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter})
	return true
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, _ bool) bool {
	if cl.Net.Inline {
		return true
	}
	if h.b.own(cl.ID, topic) {
		return true
	}
	h.b.mu.Lock()
	h.b.stats.Denied++
	h.b.mu.Unlock()
	return false
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	h.b.mu.Lock()
	h.b.published = append(h.b.published, Published{ClientID: cl.ID, Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload)})
	h.b.mu.Unlock()
	return pk, nil
}
