// Package amqpmux carries every leaf of a gateway over one AMQP connection to IoT Hub,
// as IoT Hub allows for gateways: SASL ANONYMOUS, then for each leaf its own CBS
// put-token (audience {hub}/devices/{leafId}) and its own sender link on
// /devices/{leafId}/messages/events — and, when asked, a receiver link on
// /devices/{leafId}/messages/devicebound for its cloud-to-device messages. Each leaf is
// served by its own link.Loop with the Dialer Leaf returns: a leaf "connects" by putting
// its token and attaching its links on the shared connection, and renews its token there
// with another put-token. The shared connection is dialled once, by whichever leaf needs
// it first, and re-dialled after a backoff when it breaks.
package amqpmux

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Errors of a leaf's Dial and Send.
var (
	// ErrDown means the shared connection failed recently and is not re-dialled before
	// its backoff ends.
	ErrDown = errors.New("the gateway's AMQP connection is down")
	// ErrBusy means every telemetry link slot stayed taken for SlotWait: the leaf's
	// loop backs off and comes back (putting its current token again), so a leaf
	// waiting for a slot never holds back its own token renewal for long.
	ErrBusy = errors.New("every telemetry link slot is taken")
)

// Options configure a Mux.
type Options struct {
	// DialAddr, when set, is dialled instead of the profile's host:port; TLS still
	// verifies the profile's server name.
	DialAddr string
	RootCAs  *x509.CertPool
	// Properties are added to every message's application-properties.
	Properties map[string]string
	// OnC2D receives each leaf's cloud-to-device messages; nil attaches no receiver.
	OnC2D func(leaf string, m telemetry.Message)
	// Backoff paces re-dials of the shared connection.
	Backoff backoff.Policy
	// MaxLinks bounds the telemetry links attached at once (default 256). go-amqp holds
	// about 40 KiB of buffers per link, so a leaf's link is attached when it has a
	// message and detached after LinkIdle without one; a leaf beyond the bound waits for
	// a free slot. Its CBS token stays on the connection either way.
	MaxLinks int
	// LinkIdle is how long an unused telemetry link stays attached (default 5 s).
	LinkIdle time.Duration
	// SlotWait is how long a send waits for a free link slot (default 2 s).
	SlotWait time.Duration
	// Timeout bounds connecting, each put-token, attach and send.
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// Stats count what a Mux did.
type Stats struct {
	// Connects counts shared connections opened; Lost those that broke; Attached the
	// leaves that put a token on a connection; Renewals the put-tokens on the open
	// connection after that; LinkAttaches the telemetry links attached (on demand);
	// Busy the sends that found no free link slot; Sent the messages the hub accepted;
	// C2D the cloud-to-device messages received.
	Connects, Lost, Attached, Renewals, LinkAttaches, Busy, Sent, C2D int64
}

// Mux is the gateway's one AMQP connection.
type Mux struct {
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	cur      *shared
	dialing  chan struct{}
	failures int
	lastErr  error
	nextDial time.Time

	slots chan struct{}
	busy  atomic.Int64

	connects, lost, attached, renewals, linkAttaches, sent, c2d atomic.Int64
}

type shared struct {
	conn *amqp.Conn
	sess *amqp.Session
	cbs  *amqplink.CBSNode
	host string
}

func (s *shared) alive() bool {
	select {
	case <-s.conn.Done():
		return false
	default:
		return true
	}
}

// New returns a Mux; nothing is dialled before a leaf needs it.
func New(o Options) *Mux {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Backoff.Min <= 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: 2 * time.Minute}
	}
	if o.MaxLinks <= 0 {
		o.MaxLinks = 256
	}
	if o.LinkIdle <= 0 {
		o.LinkIdle = 5 * time.Second
	}
	if o.SlotWait <= 0 {
		o.SlotWait = 2 * time.Second
	}
	return &Mux{o: o, log: o.Logger.With("link", "amqp-mux"), slots: make(chan struct{}, o.MaxLinks)}
}

// Stats returns a snapshot of the counters.
func (m *Mux) Stats() Stats {
	return Stats{Connects: m.connects.Load(), Lost: m.lost.Load(), Attached: m.attached.Load(),
		Renewals: m.renewals.Load(), LinkAttaches: m.linkAttaches.Load(), Busy: m.busy.Load(), Sent: m.sent.Load(), C2D: m.c2d.Load()}
}

// Close closes the shared connection; call it once every leaf's loop has ended.
func (m *Mux) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil {
		m.cur.conn.Close()
		m.cur = nil
	}
}

// Leaf returns the Dialer of leaf id, for its link.Loop.
func (m *Mux) Leaf(id string) link.Dialer { return &leafDialer{m: m, id: id} }

// conn returns the shared connection, dialling it with tok when there is none.
func (m *Mux) conn(ctx context.Context, tok token.Token) (*shared, error) {
	for {
		m.mu.Lock()
		if m.cur != nil && m.cur.alive() {
			sh := m.cur
			m.mu.Unlock()
			return sh, nil
		}
		if m.cur != nil {
			m.cur = nil
			m.lost.Add(1)
			m.log.Warn("connection lost")
		}
		if wait := m.dialing; wait != nil {
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if now := m.o.Now(); now.Before(m.nextDial) {
			err := m.lastErr
			m.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrDown, err)
		}
		done := make(chan struct{})
		m.dialing = done
		m.mu.Unlock()

		sh, err := m.dial(ctx, tok)

		m.mu.Lock()
		m.dialing = nil
		close(done)
		if err != nil {
			m.failures++
			m.lastErr = err
			d := m.o.Backoff.Delay(m.failures, 0)
			m.nextDial = m.o.Now().Add(d)
			m.mu.Unlock()
			m.log.Warn("connect failed", "error", err.Error(), "attempt", m.failures, "retryIn", d.Round(time.Millisecond).String())
			return nil, err
		}
		m.failures, m.cur = 0, sh
		m.mu.Unlock()
		m.connects.Add(1)
		m.log.Info("connected", "host", sh.host)
		return sh, nil
	}
}

func (m *Mux) dial(ctx context.Context, tok token.Token) (*shared, error) {
	ctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	defer cancel()
	conn, err := amqplink.Connect(ctx, tok, amqplink.ConnectOptions{Auth: amqplink.CBS, DialAddr: m.o.DialAddr, RootCAs: m.o.RootCAs})
	if err != nil {
		return nil, err
	}
	sh := &shared{conn: conn, host: tok.Response.Amqp.Host}
	if sh.sess, err = conn.NewSession(ctx, nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("session: %w", amqplink.Classify(err))
	}
	if sh.cbs, err = amqplink.OpenCBS(ctx, sh.sess, tok.Response.Amqp.Cbs.Node, m.o.Timeout); err != nil {
		conn.Close()
		return nil, err
	}
	return sh, nil
}

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
