package amqpmux

import (
	"context"
	"errors"
	"fmt"
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
	m.register(c).sync(ctx)
	m.attached.Add(1)
	return c, nil
}

// leafConn is one leaf on the shared connection: its token is on the connection, its
// telemetry link attached on demand. Its C2D link is the Mux's (c2dLink): it outlives
// a leafConn closed for a re-dial.
type leafConn struct {
	m       *Mux
	sh      *shared
	id      string
	address string

	mu      sync.Mutex
	sender  *amqp.Sender // nil while detached
	idle    *time.Timer
	sending int // sends in flight: the idle timer leaves the link alone meanwhile
	closed  bool
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

// Close detaches the leaf's telemetry link; the shared connection stays for the other
// leaves, and the leaf's C2D link for a grace period (see Mux.unregister).
func (c *leafConn) Close(bool) {
	c.m.unregister(c)
	c.mu.Lock()
	c.closed = true
	c.detachLocked()
	c.mu.Unlock()
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
		c.sending++
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
	c.sending++
	return s, nil
}

// sendDone ends a send (attached or not) and, after a successful one, restarts the
// idle timer. A timer that fires while a send is in flight, or after it was replaced,
// does nothing: a slow send must not lose its link under it.
func (c *leafConn) sendDone(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sending = max(0, c.sending-1)
	if !ok || c.sender == nil {
		return
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(c.m.o.LinkIdle, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.idle != t || c.sending > 0 {
			return
		}
		c.idle = nil
		c.detachLocked()
	})
	c.idle = t
}

// Send sends m on the leaf's link (attached if needed) and returns once the hub
// accepted it. A failed link is detached, so the next send attaches a fresh one; a
// message the hub rejected for what it is (link.ErrUndeliverable) leaves the link as
// it is.
func (c *leafConn) Send(ctx context.Context, m telemetry.Message) error {
	ctx, cancel := context.WithTimeout(ctx, c.m.o.Timeout)
	defer cancel()
	s, err := c.senderFor(ctx)
	if err != nil {
		return err
	}
	err = amqplink.SendAccepted(ctx, s, amqplink.NewMessage(m, c.m.o.Properties))
	undeliverable := errors.Is(err, link.ErrUndeliverable)
	c.sendDone(err == nil || undeliverable)
	if undeliverable {
		return fmt.Errorf("send: %w", err)
	}
	if err != nil {
		c.mu.Lock()
		c.detachLocked()
		c.mu.Unlock()
		return fmt.Errorf("send: %w", amqplink.Classify(err))
	}
	c.m.sent.Add(1)
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
