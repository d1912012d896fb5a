package awspeer

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/mochitls"
)

// hook is the stand-in's mochi hook: authentication at CONNECT, the policy on every
// publish, subscription and delivery.
type hook struct {
	mochitls.Hook
	b *Broker
}

func newHook(b *Broker) *hook {
	return &hook{Hook: mochitls.Hook{Name: "aws-custom-auth", Events: []byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect, mqtt.OnPublish, mqtt.OnSubscribe,
	}}, b: b}
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.b
	s, reason := b.authenticate(cl, pk)
	if reason != "" {
		b.refuse(reason)
		return false
	}
	b.mu.Lock()
	b.stats.Accepted++
	b.sessions[cl] = s
	delete(b.offline, cl.ID)
	b.mu.Unlock()
	b.schedule(cl, s)
	return true
}

func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if s, ok := h.b.sessions[cl]; ok {
		for _, t := range s.timers {
			t.Stop()
		}
		delete(h.b.sessions, cl)
		if !cl.Properties.Clean && !cl.IsTakenOver() {
			h.b.offline[cl.ID] = s.allow
		}
	}
}

// OnSubscribe notes the filters of a SUBSCRIBE, so OnACLCheck checks them against
// iot:Subscribe (mochi asks the same hook for subscriptions and deliveries).
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if s, ok := h.b.sessions[cl]; ok {
		s.subscribe = map[string]bool{}
		for _, f := range pk.Filters {
			s.subscribe[f.Filter] = true
		}
	}
	return pk
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sessions[cl]
	if !ok {
		// A persistent session whose client is away queues what it may receive.
		p, queued := b.offline[cl.ID]
		if !queued || write {
			return false
		}
		s = &session{allow: p}
	}
	var allowed bool
	switch {
	case write:
		allowed = s.allow.Allowed("iot:Publish", b.arn("topic/"+topic))
	case s.subscribe[topic]:
		delete(s.subscribe, topic)
		allowed = s.allow.Allowed("iot:Subscribe", b.arn("topicfilter/"+topic))
	default:
		allowed = s.allow.Allowed("iot:Receive", b.arn("topic/"+topic))
	}
	if !allowed {
		b.stats.Denied++
	}
	return allowed
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline {
		h.b.mu.Lock()
		h.b.published = append(h.b.published, Published{ClientID: cl.ID, Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...)})
		h.b.mu.Unlock()
	}
	return pk, nil
}
