// Package link is the reconnect loop the agent's protocol links share: wait for a valid
// token, connect with it, send telemetry until the token is replaced or the connection
// breaks, then connect again with the fresh token — after a backoff with jitter when the
// connection failed. The protocols (mqttlink, amqplink) only dial, send and close.
package link

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// ErrRefused marks an error by which the peer refused the token (a CONNACK refusing the
// credentials, a SASL outcome, a CBS status): the Loop asks its source for a new token.
var ErrRefused = errors.New("the peer refused the token")

// ErrUndeliverable marks an error by which the peer refused one message for what it is
// (too large, undecodable, a field it cannot take): sending it again cannot succeed,
// and the connection is still usable. Whoever holds the message drops it.
var ErrUndeliverable = errors.New("the peer will never accept this message")

// TokenSource provides the current token; *keeper.Keeper is one.
type TokenSource interface {
	// Current returns the token (ok false while there is none) and a channel closed
	// when it is replaced.
	Current() (t token.Token, changed <-chan struct{}, ok bool)
	// Invalidate reports that the peer refused the current token.
	Invalidate()
}

// Dialer is one protocol's way to connect.
type Dialer interface {
	// Endpoint returns the host and transport tok's profile for this protocol names,
	// for the logs. An error (the token has no such profile) ends Run: retrying
	// cannot fix it.
	Endpoint(tok token.Token) (host, transport string, err error)
	// Dial connects with tok. Its error wraps ErrRefused when the peer refused the
	// token.
	Dial(ctx context.Context, tok token.Token) (Conn, error)
}

// Conn is one open connection.
type Conn interface {
	// Send delivers m and returns once the peer has accepted it; an error (wrapping
	// ErrRefused when the peer refused the token) means the connection is unusable,
	// unless it wraps ErrUndeliverable: then only m was refused.
	Send(ctx context.Context, m telemetry.Message) error
	// Done is closed when the connection breaks; Err then says why.
	Done() <-chan struct{}
	// Err is why the connection broke.
	Err() error
	// Close ends the connection, politely when graceful, at once otherwise.
	Close(graceful bool)
}

// Renewer is a Conn that takes a new token without reconnecting (AMQP CBS). A Conn that
// is not one is replaced by a new connection for every new token.
type Renewer interface {
	// Renew puts tok on the open connection; an error means the connection is unusable.
	Renew(ctx context.Context, tok token.Token) error
}

// Options configure a Loop.
type Options struct {
	Source TokenSource
	// Messages are sent in order, each until the peer accepts it (at least once); a
	// closed channel ends the input but not the connection.
	Messages <-chan telemetry.Message
	// Backoff paces reconnection attempts; zero means 1 s to 2 min.
	Backoff backoff.Policy
	Now     func() time.Time
	Logger  *slog.Logger
}

// Stats count what a Loop did.
type Stats struct {
	// Connects counts opened connections; Rotations the reconnects made for a new token;
	// Renewals the tokens put on an open connection; Lost the connections that broke;
	// Refused the refused tokens.
	Connects, Rotations, Renewals, Lost, Refused int
}

// Loop keeps one connection up.
type Loop struct {
	o   Options
	d   Dialer
	log *slog.Logger

	stats counter.Set[Stats]
}

// New returns a Loop that connects with d.
func New(d Dialer, o Options) *Loop {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Backoff.Min == 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: 2 * time.Minute}
	}
	return &Loop{o: o, d: d, log: o.Logger}
}

// Stats returns a snapshot of the counters.
func (l *Loop) Stats() Stats { return l.stats.Snapshot() }

type endReason int

const (
	endCtx endReason = iota
	endRotated
	endLost
)

// session is the state of one connection while it serves.
type session struct {
	conn    Conn
	tok     token.Token
	changed <-chan struct{}
	// since is when it connected; sent counts the messages the peer accepted on it.
	since time.Time
	sent  int
}

// proved reports whether s was a working connection: it had a message accepted, or it
// stayed up longer than the longest backoff. Only then does its loss end a run of
// failures; a connection that breaks at once (a broker dropping it on the first
// message) is one more failure in a row.
func (l *Loop) proved(s *session) bool {
	return s.sent > 0 || l.o.Now().Sub(s.since) >= l.o.Backoff.Max
}

// Run keeps the link up until ctx ends; it returns nil then, or the Dialer's Endpoint
// error, which retrying cannot fix.
func (l *Loop) Run(ctx context.Context) error {
	var (
		pending  *telemetry.Message
		failures int
		msgs     = l.o.Messages
	)
	for ctx.Err() == nil {
		tok, changed, ok := token.AwaitValid(ctx, l.o.Source.Current, l.o.Now, l.log)
		if !ok {
			return nil
		}
		host, transport, err := l.d.Endpoint(tok)
		if err != nil {
			return err
		}
		c, err := l.d.Dial(ctx, tok)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			l.checkRefused(err)
			d := l.o.Backoff.Delay(failures, 0)
			l.log.Warn("connect failed", "error", err.Error(), "attempt", failures, "retryIn", d.Round(time.Millisecond).String())
			token.Sleep(ctx, d, changed) // a new token is worth trying at once
			continue
		}
		l.stats.Update(func(s *Stats) { s.Connects++ })
		l.log.Info("connected", "host", host, "transport", transport,
			"tokenValidFor", tok.Remaining(l.o.Now()).Round(time.Second).String())

		sess := &session{conn: c, tok: tok, changed: changed, since: l.o.Now()}
		reason, err := l.serve(ctx, sess, &pending, &msgs)
		switch reason {
		case endCtx:
			c.Close(true)
			return nil
		case endRotated:
			failures = 0
			l.stats.Update(func(s *Stats) { s.Rotations++ })
			l.log.Info("new token; reconnecting with it", "oldTokenValidFor", sess.tok.Remaining(l.o.Now()).Round(time.Millisecond).String())
			c.Close(true)
		case endLost:
			c.Close(false)
			l.stats.Update(func(s *Stats) { s.Lost++ })
			l.checkRefused(err)
			if l.proved(sess) {
				failures = 0
			}
			failures++
			d := l.o.Backoff.Delay(failures, 0)
			l.log.Warn("connection lost", "error", err.Error(), "tokenValidFor", sess.tok.Remaining(l.o.Now()).Round(time.Millisecond).String(),
				"attempt", failures, "retryIn", d.Round(time.Millisecond).String())
			token.Sleep(ctx, d, nil)
		}
	}
	return nil
}

func (l *Loop) checkRefused(err error) {
	if errors.Is(err, ErrRefused) {
		l.stats.Update(func(s *Stats) { s.Refused++ })
		l.o.Source.Invalidate()
	}
}

// serve sends messages until ctx ends, the connection breaks or a new token arrives
// that the connection cannot take. A message not yet accepted stays in *pending for the
// next connection; *msgs becomes nil when the input ends.
func (l *Loop) serve(ctx context.Context, s *session, pending **telemetry.Message, msgs *<-chan telemetry.Message) (endReason, error) {
	expired := time.NewTimer(max(0, s.tok.Remaining(l.o.Now())))
	defer expired.Stop()
	for {
		if *pending != nil {
			if err := s.conn.Send(ctx, **pending); err != nil {
				if ctx.Err() != nil {
					return endCtx, nil
				}
				return endLost, err
			}
			*pending = nil
			s.sent++
		}
		select {
		case <-ctx.Done():
			return endCtx, nil
		case <-s.conn.Done():
			return endLost, s.conn.Err()
		case <-expired.C:
			// No fresh token arrived in time (the service is down): the peer drops the
			// link at expiry; the reconnect then waits for a new token.
			l.log.Warn("token expired on an open connection; the peer will close it")
		case <-s.changed:
			r, ok := s.conn.(Renewer)
			if !ok {
				return endRotated, nil
			}
			next, ch, have := l.o.Source.Current()
			if !have {
				s.changed = ch
				continue
			}
			if err := r.Renew(ctx, next); err != nil {
				if ctx.Err() != nil {
					return endCtx, nil
				}
				return endLost, err
			}
			s.tok, s.changed = next, ch
			expired.Reset(max(0, next.Remaining(l.o.Now())))
			l.stats.Update(func(st *Stats) { st.Renewals++ })
			l.log.Info("token renewed on the open connection", "tokenValidFor", next.Remaining(l.o.Now()).Round(time.Second).String())
		case m, ok := <-*msgs:
			if !ok {
				*msgs = nil // input ended; keep the link for cloud-to-device messages
				continue
			}
			*pending = &m
		}
	}
}
