// Package amqpmux carries every leaf of a gateway over one AMQP connection to IoT Hub,
// as IoT Hub allows for gateways: SASL ANONYMOUS, then for each leaf its own CBS
// put-token (audience {hub}/devices/{leafId}) and its own sender link on
// /devices/{leafId}/messages/events — and, when asked, a receiver link on
// /devices/{leafId}/messages/devicebound for its cloud-to-device messages (at most
// MaxReceivers at once, rotated among the leaves that want one). The gateway serves
// each leaf through the link.Dialer Leaf returns: a leaf "connects" by putting
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
	// VerifyTime is when the hub's certificate is checked (nil: the system clock).
	VerifyTime func() time.Time
	// Properties are added to every message's application-properties.
	Properties map[string]string
	// OnC2D receives each leaf's cloud-to-device messages; nil attaches no receiver.
	// A leaf's C2D link is attached only while SetC2D says it wants one (its device
	// is subscribed to its C2D topic on the local broker) and it holds one of
	// MaxReceivers slots: go-amqp holds ~80 KiB per receiver (two 5,000-entry queues
	// sized by its fixed session window), and the hub keeps C2D messages for a leaf
	// without a link.
	OnC2D func(leaf string, m telemetry.Message)
	// MaxReceivers bounds the C2D links attached at once (default 32, ≈ 2.5 MiB).
	// When more leaves want one, the slots rotate: a link held for ReceiverDwell
	// (default 2.5 s) is detached at the next rotation (every ReceiverDwell/4) while
	// another leaf waits, and the longest-waiting leaf gets it. A C2D message for a
	// waiting leaf stays at the hub meanwhile: with W leaves subscribed locally it
	// reaches its leaf at most about (ceil(W/MaxReceivers)-1)·ReceiverDwell later
	// (1,000 leaves: ≈ 78 s, half that on average), i.e. W divided by the attach rate
	// MaxReceivers/ReceiverDwell (12.8 per second by default); with W ≤ MaxReceivers
	// nothing rotates and nothing waits.
	MaxReceivers  int
	ReceiverDwell time.Duration
	// Backoff paces re-dials of the shared connection.
	Backoff backoff.Policy
	// MaxLinks bounds the telemetry links attached at once (default 128). go-amqp holds
	// about 40 KiB of buffers per link, so a leaf's link is attached when it has a
	// message and detached after LinkIdle without one; a leaf beyond the bound waits for
	// a free slot. Its CBS token stays on the connection either way.
	MaxLinks int
	// LinkIdle is how long an unused telemetry link stays attached (default 1 s: a
	// leaf's burst goes out on one link, and 1,000 leaves sending every 10 s need about
	// 100 links at once instead of 500, so sends rarely find every slot taken).
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
	// C2D the cloud-to-device messages received; C2DAttaches the C2D links attached;
	// C2DRotations the C2D slots taken back for a waiting leaf; C2DWaiting the leaves
	// waiting for a C2D slot now.
	Connects, Lost, Attached, Renewals, LinkAttaches, Busy, Sent, C2D int64
	C2DAttaches, C2DRotations, C2DWaiting                             int64
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

	c2dMu    sync.Mutex
	wantC2D  map[string]bool
	live     map[string]*leafConn
	leaving  map[string]*time.Timer // leaves in their leaveGrace
	links    map[string]*c2dLink
	pool     *c2dPool
	rotating *time.Timer // pending rotation; nil while no leaf waits
	closed   bool
	stopped  atomic.Bool // closed, readable without c2dMu: no more C2D attaches

	connects, lost, attached, renewals, linkAttaches, sent, c2d, c2dAttaches atomic.Int64
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
		o.MaxLinks = 128
	}
	if o.LinkIdle <= 0 {
		o.LinkIdle = time.Second
	}
	if o.SlotWait <= 0 {
		o.SlotWait = 2 * time.Second
	}
	if o.MaxReceivers <= 0 {
		o.MaxReceivers = 32
	}
	if o.ReceiverDwell <= 0 {
		o.ReceiverDwell = 2500 * time.Millisecond
	}
	return &Mux{o: o, log: o.Logger.With("link", "amqp-mux"), slots: make(chan struct{}, o.MaxLinks),
		wantC2D: map[string]bool{}, live: map[string]*leafConn{}, leaving: map[string]*time.Timer{},
		links: map[string]*c2dLink{}, pool: newC2DPool(o.MaxReceivers, o.ReceiverDwell, o.Now)}
}

// Stats returns a snapshot of the counters.
func (m *Mux) Stats() Stats {
	_, waiting, rotations := m.pool.counts()
	return Stats{Connects: m.connects.Load(), Lost: m.lost.Load(), Attached: m.attached.Load(),
		Renewals: m.renewals.Load(), LinkAttaches: m.linkAttaches.Load(), Busy: m.busy.Load(), Sent: m.sent.Load(), C2D: m.c2d.Load(),
		C2DAttaches: m.c2dAttaches.Load(), C2DRotations: rotations, C2DWaiting: int64(waiting)}
}

// Close closes the shared connection; call it once every leaf's loop has ended.
func (m *Mux) Close() {
	m.c2dMu.Lock()
	m.closed = true
	m.stopped.Store(true)
	for id, t := range m.leaving {
		t.Stop()
		delete(m.leaving, id)
	}
	if m.rotating != nil {
		m.rotating.Stop()
		m.rotating = nil
	}
	m.c2dMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil {
		m.cur.conn.Close()
		m.cur = nil
	}
}

// SetC2D says whether leaf id wants a C2D link (its device is subscribed to its C2D
// topic on the local broker). The link is attached while the leaf also is on the connection and holds a
// receiver slot (see MaxReceivers). Without OnC2D it does nothing.
func (m *Mux) SetC2D(id string, on bool) {
	if m.o.OnC2D == nil {
		return
	}
	m.c2dMu.Lock()
	defer m.c2dMu.Unlock()
	m.wantC2D[id] = on
	if m.live[id] == nil && m.leaving[id] == nil {
		return
	}
	if on {
		m.pool.add(id)
		m.scheduleRotationLocked()
	} else {
		m.syncLocked(m.pool.remove(id))
	}
	m.syncLocked(id)
}

// register makes c the leaf's live connection (eligible for a C2D slot when it wants
// one) and returns the leaf's C2D link, to sync.
func (m *Mux) register(c *leafConn) *c2dLink {
	m.c2dMu.Lock()
	defer m.c2dMu.Unlock()
	m.live[c.id] = c
	if t := m.leaving[c.id]; t != nil {
		t.Stop()
		delete(m.leaving, c.id)
	}
	l := m.links[c.id]
	if l == nil {
		l = &c2dLink{m: m, id: c.id}
		m.links[c.id] = l
	}
	l.setConn(c.sh, c.address)
	if m.o.OnC2D != nil && m.wantC2D[c.id] {
		m.pool.add(c.id)
		m.scheduleRotationLocked()
	}
	return l
}

// unregister ends c's turn as the leaf's live connection. The leaf keeps its C2D slot
// and link for leaveGrace, as its loop usually dials again at once.
func (m *Mux) unregister(c *leafConn) {
	m.c2dMu.Lock()
	defer m.c2dMu.Unlock()
	if m.live[c.id] != c {
		return
	}
	delete(m.live, c.id)
	if m.closed || m.leaving[c.id] != nil {
		return
	}
	m.leaving[c.id] = time.AfterFunc(leaveGrace, func() { m.leave(c.id) })
}

// leave frees the C2D slot of a leaf that did not come back within leaveGrace.
func (m *Mux) leave(id string) {
	m.c2dMu.Lock()
	defer m.c2dMu.Unlock()
	if m.leaving[id] == nil || m.live[id] != nil {
		return
	}
	delete(m.leaving, id)
	m.syncLocked(m.pool.remove(id), id)
}

// syncLocked brings the C2D links of the given leaves in line with the pool.
func (m *Mux) syncLocked(ids ...string) {
	for _, id := range ids {
		if l := m.links[id]; l != nil {
			go l.sync(context.Background())
		}
	}
}

// scheduleRotationLocked arms the next rotation while a leaf waits for a C2D slot.
func (m *Mux) scheduleRotationLocked() {
	if m.rotating != nil || m.closed {
		return
	}
	if _, waiting, _ := m.pool.counts(); waiting == 0 {
		return
	}
	m.rotating = time.AfterFunc(max(m.o.ReceiverDwell/4, 100*time.Millisecond), m.rotate)
}

func (m *Mux) rotate() {
	m.c2dMu.Lock()
	defer m.c2dMu.Unlock()
	m.rotating = nil
	if m.closed {
		return
	}
	revoked, granted := m.pool.rotate()
	m.syncLocked(revoked...)
	m.syncLocked(granted...)
	m.scheduleRotationLocked()
}

// Leaf returns the Dialer of leaf id.
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
			err := m.cur.conn.Err()
			m.cur = nil
			m.lost.Add(1)
			m.log.Warn("connection lost", "error", fmt.Sprint(amqplink.Classify(err)))
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
	conn, err := amqplink.Connect(ctx, tok, amqplink.ConnectOptions{Auth: amqplink.CBS, DialAddr: m.o.DialAddr, RootCAs: m.o.RootCAs, VerifyTime: m.o.VerifyTime})
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
