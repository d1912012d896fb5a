package link_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// source is a Holder that counts invalidations.
type source struct {
	token.Holder
	mu          sync.Mutex
	invalidated int
}

func (s *source) Invalidate() {
	s.mu.Lock()
	s.invalidated++
	s.mu.Unlock()
}

func tok(v string, life time.Duration) token.Token {
	now := time.Now()
	return token.Token{Response: oapi.TokenResponse{Token: v, ServerTime: now, ExpiresAt: now.Add(life), RefreshAfter: now.Add(life * 4 / 5)}, RequestedAt: now}
}

// conn records what the loop did with it.
type conn struct {
	tok      string
	done     chan struct{}
	err      error
	failSend error

	mu       sync.Mutex
	sent     []string
	closed   bool
	graceful bool
}

func (c *conn) Send(_ context.Context, m telemetry.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failSend != nil {
		return c.failSend
	}
	c.sent = append(c.sent, string(m.Body))
	return nil
}
func (c *conn) Done() <-chan struct{} { return c.done }
func (c *conn) Err() error            { return c.err }
func (c *conn) Close(graceful bool) {
	c.mu.Lock()
	c.closed, c.graceful = true, graceful
	c.mu.Unlock()
}

// renewing is a conn that takes new tokens on the open connection.
type renewing struct {
	*conn
	renewed []string
}

func (r *renewing) Renew(_ context.Context, t token.Token) error {
	r.renewed = append(r.renewed, t.Response.Token)
	return nil
}

// dialer answers each Dial with the next of results (a link.Conn or an error).
type dialer struct {
	endpointErr error
	results     []any
	dialed      []string
}

func (d *dialer) Endpoint(token.Token) (string, string, error) { return "hub", "tcp", d.endpointErr }

func (d *dialer) Dial(_ context.Context, t token.Token) (link.Conn, error) {
	d.dialed = append(d.dialed, t.Response.Token)
	if len(d.results) == 0 {
		return nil, errors.New("no more results")
	}
	r := d.results[0]
	d.results = d.results[1:]
	if err, ok := r.(error); ok {
		return nil, err
	}
	return r.(link.Conn), nil
}

func newConn() *conn { return &conn{done: make(chan struct{})} }

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestLoop drives the loop with fake connections in a synctest bubble: each step acts
// and the loop settles before the checks.
func TestLoop(t *testing.T) {
	refused := errors.New("CONNACK: not authorised")
	tests := []struct {
		name         string
		results      func() []any
		steps        func(src *source, msgs chan<- telemetry.Message, results []any)
		wantDialed   []string
		wantStats    link.Stats
		wantInvalid  int
		wantSent     []string // on the last conn
		wantGraceful bool     // the first conn's Close
	}{
		{
			name:    "new token reconnects with it",
			results: func() []any { return []any{newConn(), newConn()} },
			steps: func(src *source, msgs chan<- telemetry.Message, _ []any) {
				msgs <- telemetry.Message{Body: []byte("m1")}
				src.Set(tok("t2", time.Hour))
				synctest.Wait()
				msgs <- telemetry.Message{Body: []byte("m2")}
			},
			wantDialed: []string{"t1", "t2"}, wantStats: link.Stats{Connects: 2, Rotations: 1},
			wantSent: []string{"m2"}, wantGraceful: true,
		},
		{
			name:    "refused dial invalidates the token and backs off",
			results: func() []any { return []any{fmtRefused(refused), newConn()} },
			steps: func(src *source, _ chan<- telemetry.Message, _ []any) {
				time.Sleep(time.Second) // past the backoff
			},
			wantDialed: []string{"t1", "t1"}, wantStats: link.Stats{Connects: 1, Refused: 1}, wantInvalid: 1,
		},
		{
			name: "lost connection keeps the unsent message for the next",
			results: func() []any {
				c := newConn()
				c.failSend = errors.New("broken pipe")
				return []any{c, newConn()}
			},
			steps: func(_ *source, msgs chan<- telemetry.Message, _ []any) {
				msgs <- telemetry.Message{Body: []byte("m1")}
				time.Sleep(time.Second)
			},
			wantDialed: []string{"t1", "t1"}, wantStats: link.Stats{Connects: 2, Lost: 1}, wantSent: []string{"m1"},
		},
		{
			name:    "peer closing with a refusal invalidates the token",
			results: func() []any { return []any{newConn(), newConn()} },
			steps: func(_ *source, _ chan<- telemetry.Message, results []any) {
				c := results[0].(*conn)
				c.err = fmtRefused(refused)
				close(c.done)
				time.Sleep(time.Second)
			},
			wantDialed: []string{"t1", "t1"}, wantStats: link.Stats{Connects: 2, Lost: 1, Refused: 1}, wantInvalid: 1,
		},
		{
			name:    "a Renewer takes the new token on the open connection",
			results: func() []any { return []any{&renewing{conn: newConn()}} },
			steps: func(src *source, msgs chan<- telemetry.Message, _ []any) {
				src.Set(tok("t2", time.Hour))
				synctest.Wait()
				msgs <- telemetry.Message{Body: []byte("m1")}
			},
			wantDialed: []string{"t1"}, wantStats: link.Stats{Connects: 1, Renewals: 1}, wantSent: []string{"m1"},
			wantGraceful: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := &source{}
				src.Set(tok("t1", time.Hour))
				results := tt.results()
				d := &dialer{results: append([]any(nil), results...)}
				msgs := make(chan telemetry.Message)
				l := link.New(d, link.Options{Source: src, Messages: msgs, Logger: discard(),
					Backoff: backoff.Policy{Min: 100 * time.Millisecond, Max: 200 * time.Millisecond}})
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- l.Run(ctx) }()
				synctest.Wait()
				tt.steps(src, msgs, results)
				synctest.Wait()
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Run: got %v, want nil", err)
				}
				if got := l.Stats(); got != tt.wantStats {
					t.Errorf("stats: got %+v, want %+v", got, tt.wantStats)
				}
				if !slices.Equal(d.dialed, tt.wantDialed) {
					t.Errorf("dialed with: got %q, want %q", d.dialed, tt.wantDialed)
				}
				if src.invalidated != tt.wantInvalid {
					t.Errorf("invalidations: got %d, want %d", src.invalidated, tt.wantInvalid)
				}
				last := asConn(results[len(results)-1])
				if !slices.Equal(last.sent, tt.wantSent) {
					t.Errorf("last connection sent: got %q, want %q", last.sent, tt.wantSent)
				}
				if first := asConn(results[0]); first != nil && first.graceful != tt.wantGraceful {
					t.Errorf("first connection closed gracefully: got %v, want %v", first.graceful, tt.wantGraceful)
				}
			})
		})
	}
}

// TestLoopEndpointErrorEndsRun: a token without the protocol's profile cannot be fixed
// by retrying.
func TestLoopEndpointErrorEndsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &source{}
		src.Set(tok("t1", time.Hour))
		noProfile := errors.New("no profile")
		l := link.New(&dialer{endpointErr: noProfile}, link.Options{Source: src, Logger: discard()})
		if err := l.Run(t.Context()); !errors.Is(err, noProfile) {
			t.Fatalf("Run: got %v, want %v", err, noProfile)
		}
	})
}

func fmtRefused(err error) error { return errors.Join(link.ErrRefused, err) }

func asConn(r any) *conn {
	switch c := r.(type) {
	case *conn:
		return c
	case *renewing:
		return c.conn
	}
	return nil
}

// poisonDialer connects every time; each connection fails every send at once, like a
// broker that drops the connection on a message it will never take.
type poisonDialer struct {
	mu     sync.Mutex
	dialed int
}

func (d *poisonDialer) Endpoint(token.Token) (string, string, error) { return "hub", "tcp", nil }

func (d *poisonDialer) Dial(context.Context, token.Token) (link.Conn, error) {
	d.mu.Lock()
	d.dialed++
	d.mu.Unlock()
	c := newConn()
	c.failSend = errors.New("connection closed by the broker")
	return c, nil
}

// TestConnectionsThatFailAtOnceBackOff: connecting succeeds but the connection fails
// its first send, again and again. Each such connection counts as a failure in a row, so
// the reconnects back off to Max — not a connection every Min forever because the
// connect itself succeeded.
func TestConnectionsThatFailAtOnceBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &source{}
		src.Set(tok("t1", 24*time.Hour))
		msgs := make(chan telemetry.Message, 1)
		msgs <- telemetry.Message{Body: []byte("poison")}
		d := &poisonDialer{}
		l := link.New(d, link.Options{Source: src, Messages: msgs, Logger: discard(),
			Backoff: backoff.Policy{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0.999999 }}})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- l.Run(ctx) }()
		time.Sleep(10 * time.Minute)
		cancel()
		<-done
		// 1, 2, 4, … 32 s, then a minute each: about 15 connections in 10 minutes.
		if d.dialed > 25 {
			t.Errorf("connections in 10 minutes: got %d, want the backoff to grow to its 1 min Max", d.dialed)
		}
	})
}
