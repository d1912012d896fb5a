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
	c := &leafConn{m: m, sh: sh, address: tok.Response.Amqp.Address, done: make(chan struct{})}
	if m.o.OnC2D != nil {
		actx, cancel := context.WithTimeout(ctx, m.o.Timeout)
		defer cancel()
		src := strings.TrimSuffix(tok.Response.Amqp.Address, "/messages/events") + "/messages/devicebound"
		if c.receiver, err = sh.sess.NewReceiver(actx, src, nil); err != nil {
			return nil, fmt.Errorf("c2d link: %w", amqplink.Classify(err))
		}
		go c.receive(d.id)
	}
	m.attached.Add(1)
	return c, nil
}

// leafConn is one leaf on the shared connection: its token is on the connection, its
// telemetry link attached on demand, its C2D link (when asked for) standing.
type leafConn struct {
	m        *Mux
	sh       *shared
	address  string
	receiver *amqp.Receiver

	mu     sync.Mutex
	sender *amqp.Sender // nil while detached
	idle   *time.Timer
	closed bool

	done chan struct{} // only with a C2D link: closed when it fails
	once sync.Once
	err  error
}

func (c *leafConn) fail(err error) {
	c.once.Do(func() {
		if err == nil {
			err = errors.New("connection closed")
		}
		c.err = amqplink.Classify(err)
		close(c.done)
	})
}

// receive hands the leaf's C2D messages on until its link or the connection ends.
func (c *leafConn) receive(leaf string) {
	for {
		msg, err := c.receiver.Receive(context.Background(), nil)
		if err != nil {
			c.fail(err)
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
		c.m.o.OnC2D(leaf, m)
		ctx, cancel := context.WithTimeout(context.Background(), c.m.o.Timeout)
		_ = c.receiver.AcceptMessage(ctx, msg)
		cancel()
	}
}

// Done is closed when the shared connection breaks or the leaf's C2D link fails.
func (c *leafConn) Done() <-chan struct{} {
	if c.receiver == nil {
		return c.sh.conn.Done()
	}
	return c.done
}

// Err says why Done closed.
func (c *leafConn) Err() error {
	if c.receiver == nil {
		if err := c.sh.conn.Err(); err != nil {
			return amqplink.Classify(err)
		}
		return errors.New("connection closed")
	}
	return c.err
}

// Close detaches the leaf's links; the shared connection stays for the other leaves.
func (c *leafConn) Close(bool) {
	c.mu.Lock()
	c.closed = true
	c.detachLocked()
	c.mu.Unlock()
	if c.receiver != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.receiver.Close(ctx)
	}
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
