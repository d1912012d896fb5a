package amqpmux

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// leafDialer attaches one leaf on the shared connection.
type leafDialer struct {
	m  *Mux
	id string
}

var (
	_ link.Dialer  = (*leafDialer)(nil)
	_ link.Conn    = (*leafConn)(nil)
	_ link.Renewer = (*leafConn)(nil)
)

// Endpoint returns the host of tok's AMQP profile, or amqplink.ErrNoProfile.
func (d *leafDialer) Endpoint(tok token.Token) (host, transport string, err error) {
	p := tok.Response.Amqp
	if p == nil {
		return "", "", amqplink.ErrNoProfile
	}
	return p.Host, string(p.Transport), nil
}

// Dial puts the leaf's token on the shared connection (dialling it if needed) and
// attaches the leaf's links. A refused token wraps link.ErrRefused.
func (d *leafDialer) Dial(ctx context.Context, tok token.Token) (link.Conn, error) {
	m := d.m
	sh, err := m.conn(ctx, tok)
	if err != nil {
		return nil, err
	}
	if tok.Response.Amqp.Host != sh.host {
		return nil, fmt.Errorf("leaf %s is on %s, the gateway's connection on %s: one gateway serves one hub", d.id, tok.Response.Amqp.Host, sh.host)
	}
	if err := sh.cbs.PutToken(ctx, tok); err != nil {
		return nil, err
	}
	c := &leafConn{m: m, sh: sh, id: d.id, address: tok.Response.Amqp.Address}
	m.register(c)
	c.syncReceiver(ctx)
	m.attached.Add(1)
	return c, nil
}

// leafConn is one leaf on the shared connection: its token is on the connection, its
// telemetry link attached on demand, its C2D link attached while the leaf is connected
// to the local broker (Mux.SetC2D) and holds a receiver slot.
type leafConn struct {
	m       *Mux
	sh      *shared
	id      string
	address string

	mu     sync.Mutex
	sender *amqp.Sender // nil while detached
	idle   *time.Timer
	closed bool

	rmu      sync.Mutex
	receiver *amqp.Receiver // nil while detached
	rclosed  bool
}

// syncReceiver attaches or detaches the leaf's C2D link as the receiver pool says
// (attached while the leaf holds a slot and this connection is not closed). It reads
// the pool's current state, so calls in any order end in the right state. A failed
// attach is logged and tried again shortly while the leaf still holds its slot.
func (c *leafConn) syncReceiver(ctx context.Context) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	on := !c.rclosed && c.m.pool.holds(c.id)
	if on == (c.receiver != nil) {
		return
	}
	if !on {
		c.detachReceiverLocked()
		return
	}
	actx, cancel := context.WithTimeout(ctx, c.m.o.Timeout)
	defer cancel()
	src := strings.TrimSuffix(c.address, "/messages/events") + "/messages/devicebound"
	r, err := c.sh.sess.NewReceiver(actx, src, nil)
	if err != nil {
		c.m.log.Warn("c2d link failed", "leaf", c.id, "error", amqplink.Classify(err).Error())
		c.retryReceiver()
		return
	}
	c.m.c2dAttaches.Add(1)
	c.receiver = r
	go c.receive(r)
}

// detachReceiverLocked closes the C2D link, if attached. A message received on it but
// not yet accepted is not settled: the hub delivers it again later (at least once).
func (c *leafConn) detachReceiverLocked() {
	r := c.receiver
	if r == nil {
		return
	}
	c.receiver = nil
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.Close(cctx)
}

// retryReceiver attaches the C2D link again in a second if the leaf still holds its
// slot and the connection is up (when it is not, the leaf's loop dials again anyway).
func (c *leafConn) retryReceiver() {
	time.AfterFunc(time.Second, func() {
		if c.m.pool.holds(c.id) && c.sh.alive() {
			c.syncReceiver(context.Background())
		}
	})
}

// receive hands the leaf's C2D messages on until the link ends.
func (c *leafConn) receive(r *amqp.Receiver) {
	for {
		msg, err := r.Receive(context.Background(), nil)
		if err != nil {
			c.rmu.Lock()
			ours := c.receiver == r // not detached on purpose
			if ours {
				c.receiver = nil
			}
			c.rmu.Unlock()
			if ours {
				c.retryReceiver()
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
		c.m.c2d.Add(1)
		c.m.o.OnC2D(c.id, m)
		ctx, cancel := context.WithTimeout(context.Background(), c.m.o.Timeout)
		_ = r.AcceptMessage(ctx, msg)
		cancel()
	}
}

// Done is closed when the shared connection breaks.
func (c *leafConn) Done() <-chan struct{} { return c.sh.conn.Done() }

// Err says why Done closed.
func (c *leafConn) Err() error {
	if err := c.sh.conn.Err(); err != nil {
		return amqplink.Classify(err)
	}
	return errors.New("connection closed")
}

// Close detaches the leaf's links; the shared connection stays for the other leaves.
func (c *leafConn) Close(bool) {
	c.m.unregister(c)
	c.mu.Lock()
	c.closed = true
	c.detachLocked()
	c.mu.Unlock()
	c.rmu.Lock()
	c.rclosed = true
	c.detachReceiverLocked()
	c.rmu.Unlock()
}

// detachLocked closes the telemetry link, if attached, and frees its slot.
func (c *leafConn) detachLocked() {
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	if c.sender == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.sender.Close(ctx)
	c.sender = nil
	<-c.m.slots
}

// senderFor returns the attached telemetry link, attaching it (in a free slot) first
// when needed.
func (c *leafConn) senderFor(ctx context.Context) (*amqp.Sender, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("leaf link closed")
	}
	if c.sender != nil {
		return c.sender, nil
	}
	wait := time.NewTimer(c.m.o.SlotWait)
	defer wait.Stop()
	select {
	case c.m.slots <- struct{}{}:
	case <-wait.C:
		c.m.busy.Add(1)
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s, err := c.sh.sess.NewSender(ctx, c.address, nil)
	if err != nil {
		<-c.m.slots
		return nil, fmt.Errorf("telemetry link: %w", amqplink.Classify(err))
	}
	c.m.linkAttaches.Add(1)
	c.sender = s
	return s, nil
}

// touch restarts the idle timer after a send.
func (c *leafConn) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sender == nil {
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(c.m.o.LinkIdle, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.idle = nil
			c.detachLocked()
		})
		return
	}
	c.idle.Reset(c.m.o.LinkIdle)
}

// Send sends m on the leaf's link (attached if needed) and returns once the hub
// accepted it. A failed link is detached, so the next send attaches a fresh one.
func (c *leafConn) Send(ctx context.Context, m telemetry.Message) error {
	ctx, cancel := context.WithTimeout(ctx, c.m.o.Timeout)
	defer cancel()
	s, err := c.senderFor(ctx)
	if err == nil {
		err = s.Send(ctx, amqplink.NewMessage(m, c.m.o.Properties), nil)
		if err != nil {
			err = fmt.Errorf("send: %w", amqplink.Classify(err))
		}
	}
	if err != nil {
		c.mu.Lock()
		c.detachLocked()
		c.mu.Unlock()
		return err
	}
	c.m.sent.Add(1)
	c.touch()
	return nil
}

// Renew puts the leaf's new token on the shared connection.
func (c *leafConn) Renew(ctx context.Context, tok token.Token) error {
	if err := c.sh.cbs.PutToken(ctx, tok); err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	c.m.renewals.Add(1)
	return nil
}
