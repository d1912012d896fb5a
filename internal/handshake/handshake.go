// Package handshake bounds how many TLS handshakes a server runs at once.
//
// A boot storm is thousands of devices opening new TLS connections together. Go's server
// starts every handshake at once; they share the CPU evenly, so past a point none of them
// finishes within the handshake deadline and all fail together. The request-level bounds
// (rate limits, the in-flight bound) come too late: they act after the handshake. With a
// limit, handshakes beyond it wait for a slot, those admitted finish quickly, and the rest
// queue instead of timing out.
//
// A slot is taken once the ClientHello has arrived (a connection that never sends one
// holds none) and given back when the handshake completes, or when the connection ends
// without completing it — or, on a Listener's connections, as soon as the server has
// sent its flight, so a client that stalls after its ClientHello holds none either.
package handshake

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBusy fails a handshake that waited longer than the limiter's wait for a slot.
var ErrBusy = errors.New("handshake: no slot free in time")

// Limiter hands out handshake slots.
type Limiter struct {
	slots  chan struct{}
	wait   time.Duration
	held   sync.Map // net.Conn (as accepted) → *slot
	waited atomic.Uint64
	busy   atomic.Uint64
}

// Stats are the limiter's counters, for metrics.
type Stats struct {
	InUse  int    // slots taken now
	Waited uint64 // handshakes that found no slot free at once
	Busy   uint64 // handshakes failed with ErrBusy
}

type slot struct{ once sync.Once }

// New returns a Limiter of n slots; a handshake waits at most wait for one.
func New(n int, wait time.Duration) *Limiter {
	return &Limiter{slots: make(chan struct{}, n), wait: wait}
}

// Config returns base with the limit applied: serve TLS with it, and call ConnState
// from the server's ConnState hook. base must be complete (certificates included) and
// must not set GetConfigForClient; its VerifyConnection, if any, still runs.
func (l *Limiter) Config(base *tls.Config) *tls.Config {
	base = base.Clone() // what each connection's configuration copies
	out := base.Clone() // the listener's: base plus the hook that hands out slots
	out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if err := l.acquire(hello); err != nil {
			return nil, err
		}
		s := &slot{}
		l.held.Store(hello.Conn, s)
		conn := hello.Conn
		if wc, ok := conn.(*watchedConn); ok {
			wc.hold(func() { l.release(conn, s) })
		}
		c := base.Clone()
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			l.release(conn, s)
			if base.VerifyConnection != nil {
				return base.VerifyConnection(cs)
			}
			return nil
		}
		return c, nil
	}
	return out
}

func (l *Limiter) acquire(hello *tls.ClientHelloInfo) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	l.waited.Add(1)
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-hello.Context().Done():
		return hello.Context().Err()
	case <-t.C:
		l.busy.Add(1)
		return ErrBusy
	}
}

func (l *Limiter) release(conn net.Conn, s *slot) {
	s.once.Do(func() {
		l.held.Delete(conn)
		<-l.slots
	})
}

// ConnState gives back the slot of a connection that ended (or began a request) without
// its handshake's completion having done so. Install it as http.Server.ConnState.
func (l *Limiter) ConnState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked && state != http.StateActive {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if v, ok := l.held.Load(c); ok {
		l.release(c, v.(*slot))
	}
}

// Stats returns the counters.
func (l *Limiter) Stats() Stats {
	return Stats{InUse: len(l.slots), Waited: l.waited.Load(), Busy: l.busy.Load()}
}
