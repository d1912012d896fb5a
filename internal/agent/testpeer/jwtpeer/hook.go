package jwtpeer

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/mochitls"
)

// hook is the broker's mochi-mqtt hook: authentication, re-authentication, the acl
// claim, and the record of what was published.
type hook struct {
	mochitls.Hook
	b *Broker
}

func newHook(b *Broker) *hook {
	return &hook{Hook: mochitls.Hook{Name: "jwt", Events: []byte{
		mqtt.OnConnectAuthenticate, mqtt.OnAuthPacket, mqtt.OnPacketEncode, mqtt.OnACLCheck, mqtt.OnDisconnect, mqtt.OnPublish,
	}}, b: b}
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	s, reason := h.b.authenticate(cl, pk)
	if reason != "" {
		h.b.mu.Lock()
		h.b.stats.Refused[reason]++
		h.b.mu.Unlock()
		return false
	}
	h.b.start(cl, s)
	return true
}

func (h *hook) OnAuthPacket(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, h.b.reauthenticate(cl, pk)
}

// OnPacketEncode names the authentication method in a successful CONNACK, as MQTT 5
// requires of a server that accepted enhanced authentication.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != packets.CodeSuccess.Code {
		return pk
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if s := h.b.sessions[cl]; s != nil && s.method != "" {
		pk.Properties.AuthenticationMethod = s.method
	}
	return pk
}

func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if s, ok := h.b.sessions[cl]; ok {
		s.timer.Stop()
		delete(h.b.sessions, cl)
	}
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	s := h.b.sessions[cl]
	if s == nil {
		return false
	}
	if s.v.ACL == nil || s.v.ACL.Allows(topic, write) {
		return true
	}
	h.b.stats.Denied++
	return false
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	props := make(map[string]string, len(pk.Properties.User))
	for _, u := range pk.Properties.User {
		props[u.Key] = u.Val
	}
	h.b.mu.Lock()
	if h.b.throttle > 0 && pk.FixedHeader.Qos > 0 {
		h.b.throttle--
		h.b.stats.Throttled++
		h.b.mu.Unlock()
		return pk, packets.ErrQuotaExceeded
	}
	h.b.published = append(h.b.published, Published{ClientID: cl.ID, Topic: pk.TopicName,
		Payload: append([]byte(nil), pk.Payload...), Properties: props})
	h.b.mu.Unlock()
	return pk, nil
}
