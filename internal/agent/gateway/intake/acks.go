package intake

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// AsyncSink is a Sink that stores without blocking its caller; *queue.Queue is one.
// With it the broker's read loop of a leaf hands a message over and goes back to
// reading at once, instead of waiting, deep in the broker's call chain, for the
// queue's fsync: a thousand leaves publishing together then do not each hold a grown
// goroutine stack (≈ 16 KiB) until their message is on disk.
type AsyncSink interface {
	// PutAsync stores m for leaf and calls done once it is on disk (nil) or could
	// not be stored; one caller's puts complete in call order. done must not block.
	PutAsync(leaf string, m telemetry.Message, done func(error))
}

// MaxUnstored bounds one leaf connection's messages handed over but not yet stored:
// beyond it the leaf's read loop waits, so a leaf that floods holds memory for at most
// this many messages.
const MaxUnstored = 32

// acker writes the PUBACKs of stored messages, per leaf connection in the order the
// leaf published them, from a goroutine that exists only while a connection has
// acknowledgements to write (a leaf that does not read its socket blocks only its own).
type acker struct {
	mu      sync.Mutex
	clients map[*mqtt.Client]*clientAcks
}

type clientAcks struct {
	unstored chan struct{} // one token per message handed over, not yet stored
	ids      []uint16      // stored QoS 1 messages to acknowledge, in order
	writing  bool
}

func (a *acker) of(cl *mqtt.Client) *clientAcks {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.clients[cl]
	if c == nil {
		c = &clientAcks{unstored: make(chan struct{}, MaxUnstored)}
		a.clients[cl] = c
	}
	return c
}

// forget drops a closed connection's state; acknowledgements still due for it go
// nowhere (the leaf publishes those messages again: at least once).
func (a *acker) forget(cl *mqtt.Client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.clients, cl)
}

// putAsync hands msg to the sink and acknowledges it (QoS 1) once stored; a message
// the sink cannot store is not acknowledged, so the leaf sends it again.
func (m *MQTT) putAsync(sink AsyncSink, cl *mqtt.Client, id uint16, ack bool, msg telemetry.Message) {
	c := m.acks.of(cl)
	c.unstored <- struct{}{} // waits while MaxUnstored are in flight
	sink.PutAsync(cl.ID, msg, func(err error) {
		<-c.unstored
		if err != nil {
			m.stat.Update(func(s *MQTTStats) { s.Failed++ })
			m.log.Error("leaf message not stored; not acknowledged", "clientId", cl.ID, "error", err.Error())
			return
		}
		m.stat.Update(func(s *MQTTStats) { s.Accepted++ })
		if ack {
			m.acks.queue(cl, c, id)
		}
	})
}

func (a *acker) queue(cl *mqtt.Client, c *clientAcks, id uint16) {
	a.mu.Lock()
	c.ids = append(c.ids, id)
	start := !c.writing
	c.writing = true
	a.mu.Unlock()
	if start {
		go a.write(cl, c)
	}
}

// write sends c's acknowledgements until none is left.
func (a *acker) write(cl *mqtt.Client, c *clientAcks) {
	for {
		a.mu.Lock()
		ids := c.ids
		c.ids = nil
		if len(ids) == 0 {
			c.writing = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		for _, id := range ids {
			// An error means the connection closed: the leaf publishes again.
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
		}
	}
}
