package amqpmux

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// leaveGrace is how long a leaf whose connection object closed keeps its C2D slot and
// link: a leaf's loop re-dials at once after a busy send or a failed renewal (its token
// stays on the connection meanwhile), and re-attaching a receiver each time would churn
// links and rotate the leaf to the back of the line.
const leaveGrace = 30 * time.Second

// c2dLink is one leaf's C2D receiver. It is attached while the leaf holds a receiver
// slot (c2dPool) and the connection its token was last put on is up; it lives as long
// as the Mux, across the leaf's re-dials.
type c2dLink struct {
	m  *Mux
	id string

	mu       sync.Mutex
	sh       *shared // the connection the leaf's token was last put on
	source   string  // /devices/{id}/messages/devicebound
	receiver *amqp.Receiver
	on       *shared // the connection receiver is attached on
}

// setConn records the connection the leaf's token was just put on.
func (l *c2dLink) setConn(sh *shared, eventsAddress string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sh = sh
	l.source = strings.TrimSuffix(eventsAddress, "/messages/events") + "/messages/devicebound"
}

// sync attaches or detaches the receiver as the pool and the connection say. It reads
// their current state, so calls in any order end in the right state. A failed attach
// is logged and tried again shortly while the leaf still holds its slot.
func (l *c2dLink) sync(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := l.sh != nil && !l.m.stopped.Load() && l.sh.alive() && l.m.pool.holds(l.id)
	if l.receiver != nil && (!want || l.on != l.sh) {
		l.detachLocked()
	}
	if !want || l.receiver != nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, l.m.o.Timeout)
	defer cancel()
	r, err := l.sh.sess.NewReceiver(actx, l.source, nil)
	if err != nil && (l.m.stopped.Load() || !l.sh.alive()) {
		return // the connection went away meanwhile; the leaf's loop dials again
	}
	if err != nil {
		l.m.log.Warn("c2d link failed", "leaf", l.id, "error", amqplink.Classify(err).Error())
		l.retry()
		return
	}
	l.m.c2dAttaches.Add(1)
	l.receiver, l.on = r, l.sh
	go l.receive(r)
}

// detachLocked closes the receiver, if attached. A message received on it but not yet
// accepted is not settled: the hub delivers it again later (at least once).
func (l *c2dLink) detachLocked() {
	r := l.receiver
	if r == nil {
		return
	}
	l.receiver, l.on = nil, nil
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.Close(cctx)
}

// retry syncs again in a second.
func (l *c2dLink) retry() {
	time.AfterFunc(time.Second, func() { l.sync(context.Background()) })
}

// receive hands the leaf's C2D messages on until the link ends.
func (l *c2dLink) receive(r *amqp.Receiver) {
	for {
		msg, err := r.Receive(context.Background(), nil)
		if err != nil {
			l.mu.Lock()
			ours := l.receiver == r // not detached on purpose
			if ours {
				l.receiver, l.on = nil, nil
			}
			l.mu.Unlock()
			if ours {
				l.retry()
			}
			return
		}
		m := telemetry.Message{Body: msg.GetData()}
		if len(msg.ApplicationProperties) > 0 {
			m.Properties = make(map[string]string, len(msg.ApplicationProperties))
			for k, v := range msg.ApplicationProperties {
				m.Properties[k] = fmt.Sprint(v)
			}
		}
		l.m.c2d.Add(1)
		l.m.o.OnC2D(l.id, m)
		ctx, cancel := context.WithTimeout(context.Background(), l.m.o.Timeout)
		_ = r.AcceptMessage(ctx, msg)
		cancel()
	}
}
