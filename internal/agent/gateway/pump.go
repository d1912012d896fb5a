package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/amqpmux"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// LinkStats count what the leaves' upstream links did.
type LinkStats struct {
	// Connects counts leaf connections opened (over AMQP: tokens put and links
	// attached on the shared connection); Renewals the tokens put on an open
	// connection; Rotations the reconnects for a new token (MQTT); Lost the connections
	// that broke or failed a send; Failed the connects that failed; Refused the tokens
	// the hub refused; Sent the messages the hub accepted (then removed from the
	// queue); Rejected the messages the hub rejected for what they are
	// (link.ErrUndeliverable: removed from the queue too, since sending them again
	// cannot succeed).
	Connects, Renewals, Rotations, Lost, Failed, Refused, Sent, Rejected int
}

// pump drives every leaf's upstream link with a few workers instead of goroutines per
// leaf (1,000 leaves used to hold 2,000 goroutines, ≈ 8 MiB of stacks, mostly waiting).
// A leaf is scheduled when its token changes, its queue gains a message, its
// connection breaks or its retry backoff ends; a worker then brings the leaf's link up
// to date — connects with the current token, puts a new token on the open connection
// (link.Renewer) or reconnects with it — and sends the leaf's queued messages in order,
// one at a time, each removed from the queue once the hub accepted it. One worker at a
// time serves a leaf, so a leaf's messages never overtake each other, and a leaf whose
// token is refused holds up no other leaf (it backs off on its own timer).
type pump struct {
	q       *queue.Queue
	log     *slog.Logger // per-leaf events, at the level the upstream wants
	backoff backoff.Policy
	now     func() time.Time
	workers int
	burst   int // messages sent for one leaf before the worker yields to the next

	// urgent holds the leaves whose token changed or that must connect, ready those
	// with queued messages; each leaf is at most once in each, so neither blocks. A
	// worker takes an urgent leaf first: a burst of queued messages must not delay a
	// token renewal past the old token's expiry (the hub then drops the leaf's links).
	urgent, ready chan *pleaf

	mu      sync.Mutex
	leaves  map[string]*pleaf
	watched map[<-chan struct{}]bool

	stats counter.Set[LinkStats]
}

// pleaf is one leaf's upstream state.
type pleaf struct {
	id  string
	d   link.Dialer
	src link.TokenSource

	// Guarded by pump.mu.
	queued, inUrgent, busy, again, againUrgent bool
	done                                       <-chan struct{} // conn's, for the loss watcher
	retry                                      *time.Timer     // armed while backing off
	failedTok                                  string          // the token the last failure had

	// Owned by the worker serving the leaf (busy).
	conn     link.Conn
	tok      token.Token // the token on conn
	since    time.Time   // when conn connected
	failures int         // failures in a row: ended by a message the hub accepts
	warned   bool        // the expired-token warning was logged
}

// newPump returns a pump for n leaves, which add then registers.
func newPump(q *queue.Queue, bo backoff.Policy, log *slog.Logger, workers, n int) *pump {
	return &pump{q: q, log: log, backoff: bo, now: time.Now, workers: workers, burst: 32,
		urgent: make(chan *pleaf, n), ready: make(chan *pleaf, n), leaves: make(map[string]*pleaf, n), watched: map[<-chan struct{}]bool{}}
}

// add registers a leaf; call it before run.
func (p *pump) add(id string, d link.Dialer, src link.TokenSource) {
	p.leaves[id] = &pleaf{id: id, d: d, src: src}
}

// Stats returns a snapshot of the counters.
func (p *pump) Stats() LinkStats { return p.stats.Snapshot() }

// schedule asks a worker to send leaf id's queued messages. Unknown IDs are ignored.
func (p *pump) schedule(id string) { p.scheduleID(id, false) }

// scheduleToken asks a worker to put leaf id's new token on its connection (or connect
// with it) before any other leaf's queued messages.
func (p *pump) scheduleToken(id string) { p.scheduleID(id, true) }

func (p *pump) scheduleID(id string, urgent bool) {
	if l := p.leaves[id]; l != nil {
		p.mu.Lock()
		p.scheduleLocked(l, urgent)
		p.mu.Unlock()
	}
}

func (p *pump) scheduleLocked(l *pleaf, urgent bool) {
	switch {
	case l.busy:
		l.again = true
		l.againUrgent = l.againUrgent || urgent
	case urgent && !l.inUrgent:
		l.inUrgent = true
		p.urgent <- l
	case !urgent && !l.queued && !l.inUrgent:
		l.queued = true
		p.ready <- l
	}
}

// run serves until ctx ends, then closes every leaf's connection. It returns the
// first error retrying cannot fix (a token without the upstream's profile).
func (p *pump) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.mu.Lock()
	for _, l := range p.leaves {
		p.scheduleLocked(l, true) // a token or queued messages may be there already
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			for {
				select {
				case l := <-p.urgent:
					p.turn(ctx, l, true, cancel)
					continue
				default:
				}
				select {
				case <-ctx.Done():
					return
				case l := <-p.urgent:
					p.turn(ctx, l, true, cancel)
				case l := <-p.ready:
					p.turn(ctx, l, false, cancel)
				}
			}
		})
	}
	wg.Wait()
	p.closeAll()
	if err := context.Cause(ctx); errors.Is(err, errFatal) {
		return err
	}
	return nil
}

// errFatal marks the error that ends run: retrying cannot fix it.
var errFatal = errors.New("gateway leaf link")

// turn serves l once, taken from the urgent queue or the other, and schedules it again
// when it has more to do.
func (p *pump) turn(ctx context.Context, l *pleaf, urgent bool, fatal context.CancelCauseFunc) {
	p.mu.Lock()
	if urgent {
		l.inUrgent = false
	} else {
		l.queued = false
	}
	if l.busy { // taken from the other queue by another worker meanwhile
		l.again = true
		p.mu.Unlock()
		return
	}
	l.busy, l.again, l.againUrgent = true, false, false
	p.mu.Unlock()
	more, err := p.serve(ctx, l)
	if err != nil {
		fatal(fmt.Errorf("%w: leaf %s: %w", errFatal, l.id, err))
	}
	p.mu.Lock()
	l.busy = false
	if (more || l.again) && ctx.Err() == nil {
		p.scheduleLocked(l, l.againUrgent)
	}
	p.mu.Unlock()
}

// serve brings l's connection up to date and sends up to burst queued messages. more
// says messages may remain; err is an error retrying cannot fix.
func (p *pump) serve(ctx context.Context, l *pleaf) (more bool, err error) {
	tok, _, ok := l.src.Current()
	if !ok || p.backingOff(l, tok) {
		return false, nil // its token or its retry timer schedules it again
	}
	if l.conn != nil {
		select {
		case <-l.conn.Done():
			p.lost(l, tok, l.conn.Err())
			return false, nil
		default:
		}
	}
	if l.conn == nil || tok.Response.Token != l.tok.Response.Token {
		if tok.Remaining(p.now()) <= 0 {
			if !l.warned {
				p.log.Warn("token expired; waiting for a new one before connecting", "leaf", l.id)
				l.warned = true
			}
			if l.conn == nil {
				return false, nil
			}
		} else if ok, err := p.update(ctx, l, tok); !ok || err != nil {
			return false, err
		}
	}
	for range p.burst {
		p.mu.Lock()
		renew := l.againUrgent // a new token came meanwhile: put it first
		p.mu.Unlock()
		if renew {
			return true, nil
		}
		r, ok, err := p.q.Peek(l.id)
		if err != nil || !ok {
			return false, nil // a failed queue logs its own errors
		}
		err = l.conn.Send(ctx, r.Message)
		if errors.Is(err, link.ErrUndeliverable) {
			p.q.Ack(l.id, r.Seq)
			p.stats.Update(func(s *LinkStats) { s.Rejected++ })
			p.log.Warn("the hub rejected a message; dropped", "leaf", l.id, "error", err.Error(), "bytes", len(r.Message.Body))
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				p.lost(l, tok, err)
			}
			return false, nil
		}
		p.q.Ack(l.id, r.Seq)
		l.failures = 0
		p.stats.Update(func(s *LinkStats) { s.Sent++ })
	}
	return true, nil
}

// update puts tok on l's open connection, or connects l with it (closing first a
// connection that cannot take a new token). ok false: l failed and backs off; err: the
// token has no profile for this upstream.
func (p *pump) update(ctx context.Context, l *pleaf, tok token.Token) (ok bool, err error) {
	l.warned = false
	if l.conn != nil {
		r, renews := l.conn.(link.Renewer)
		if !renews {
			l.conn.Close(true)
			l.conn = nil
			p.stats.Update(func(s *LinkStats) { s.Rotations++ })
		} else if err := r.Renew(ctx, tok); err != nil {
			if ctx.Err() == nil {
				p.lost(l, tok, err)
			}
			return false, nil
		} else {
			l.tok = tok
			p.stats.Update(func(s *LinkStats) { s.Renewals++ })
			return true, nil
		}
	}
	if _, _, err := l.d.Endpoint(tok); err != nil {
		return false, err
	}
	c, err := l.d.Dial(ctx, tok)
	if err != nil {
		if ctx.Err() == nil {
			p.stats.Update(func(s *LinkStats) { s.Failed++ })
			p.fail(l, tok, err, "connect failed")
		}
		return false, nil
	}
	l.conn, l.tok, l.since = c, tok, p.now()
	p.stats.Update(func(s *LinkStats) { s.Connects++ })
	p.watch(ctx, l, c.Done())
	return true, nil
}

// lost closes l's broken connection and backs off before the next connect. A connection
// that had a message accepted, or stayed up longer than the longest backoff, ended a
// run of failures; one that breaks at once (the hub detaching the link on a message it
// will never take) is one more failure in a row, so its leaf backs off to Max instead
// of reconnecting every Min. A send that found no free AMQP link slot is not the
// link's failure: its leaf comes back after the shortest backoff, as before.
func (p *pump) lost(l *pleaf, tok token.Token, err error) {
	if p.now().Sub(l.since) >= p.backoff.Max || errors.Is(err, amqpmux.ErrBusy) {
		l.failures = 0
	}
	l.conn.Close(false)
	l.conn = nil
	p.stats.Update(func(s *LinkStats) { s.Lost++ })
	if err == nil {
		err = errors.New("connection closed")
	}
	p.fail(l, tok, err, "connection lost")
}

// fail counts a failure of l with tok (asking for a new token when the hub refused it)
// and arms l's retry after the backoff; a new token is tried at once.
func (p *pump) fail(l *pleaf, tok token.Token, err error, msg string) {
	if errors.Is(err, link.ErrRefused) {
		p.stats.Update(func(s *LinkStats) { s.Refused++ })
		l.src.Invalidate()
	}
	l.failures++
	d := p.backoff.Delay(l.failures, 0)
	p.log.Warn(msg, "leaf", l.id, "error", err.Error(), "attempt", l.failures, "retryIn", d.Round(time.Millisecond).String())
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.retry != nil {
		l.retry.Stop()
	}
	l.failedTok = tok.Response.Token
	l.retry = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		l.retry = nil
		p.scheduleLocked(l, true)
	})
}

// backingOff reports whether l waits for its retry timer: it failed with tok, the
// token it still has.
func (p *pump) backingOff(l *pleaf, tok token.Token) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.retry == nil {
		return false
	}
	if tok.Response.Token == l.failedTok {
		return true
	}
	l.retry.Stop() // a new token is worth trying at once
	l.retry = nil
	return false
}

// watch schedules every leaf on done's connection when it breaks: one goroutine per
// connection (one for every leaf over AMQP).
func (p *pump) watch(ctx context.Context, l *pleaf, done <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l.done = done
	if p.watched[done] {
		return
	}
	p.watched[done] = true
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.watched, done)
		if ctx.Err() != nil {
			return
		}
		for _, l := range p.leaves {
			if l.done == done {
				l.done = nil
				p.scheduleLocked(l, true)
			}
		}
	}()
}

// closeAll closes every open connection politely, a few at a time; run calls it once
// the workers have stopped.
func (p *pump) closeAll() {
	p.mu.Lock()
	for _, l := range p.leaves {
		if l.retry != nil {
			l.retry.Stop()
			l.retry = nil
		}
	}
	p.mu.Unlock()
	sem := make(chan struct{}, p.workers)
	var wg sync.WaitGroup
	for _, l := range p.leaves {
		if l.conn == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			l.conn.Close(true)
			l.conn = nil
		})
	}
	wg.Wait()
}
