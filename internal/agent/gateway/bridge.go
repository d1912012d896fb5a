package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// feeder hands one leaf's queued messages to its link.Loop one at a time: the next only
// after the hub accepted the last, which is then removed from the queue.
type feeder struct {
	id    string
	q     *queue.Queue
	ch    chan telemetry.Message
	acked chan struct{}
	cur   atomic.Uint64 // the sequence number of the message in flight
}

func (f *feeder) run(ctx context.Context) {
	for {
		r, err := f.q.Head(ctx, f.id)
		if err != nil {
			return // ctx ended (or the queue failed: logged by the queue)
		}
		f.cur.Store(r.Seq)
		select {
		case f.ch <- r.Message:
		case <-ctx.Done():
			return
		}
		select {
		case <-f.acked:
		case <-ctx.Done():
			return
		}
	}
}

// dropped reports whether the message in flight was dropped from the queue (full)
// while it waited: it is then not sent.
func (f *feeder) dropped() bool { return !f.q.Has(f.id, f.cur.Load()) }

// sent is called once the hub accepted the message in flight.
func (f *feeder) sent() {
	f.q.Ack(f.id, f.cur.Load())
	select {
	case f.acked <- struct{}{}:
	default:
	}
}

// ackDialer wraps a protocol's Dialer so that every accepted Send reports to the feeder. It
// keeps the connection's Renewer, if it has one.
type ackDialer struct {
	link.Dialer
	f *feeder
}

func (d ackDialer) Dial(ctx context.Context, tok token.Token) (link.Conn, error) {
	c, err := d.Dialer.Dial(ctx, tok)
	if err != nil {
		return nil, err
	}
	ac := ackConn{Conn: c, f: d.f}
	if r, ok := c.(link.Renewer); ok {
		return ackRenewConn{ackConn: ac, Renewer: r}, nil
	}
	return ac, nil
}

type ackConn struct {
	link.Conn
	f *feeder
}

// Send sends m unless the queue dropped it meanwhile (counted there) and reports an
// accepted message to the feeder.
func (c ackConn) Send(ctx context.Context, m telemetry.Message) error {
	if !c.f.dropped() {
		if err := c.Conn.Send(ctx, m); err != nil {
			return err
		}
	}
	c.f.sent()
	return nil
}

type ackRenewConn struct {
	ackConn
	link.Renewer
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(a), min: h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), min: h.min}
}
