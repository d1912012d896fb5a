package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// The pump's scheduling, with a scripted upstream: the end-to-end tests run it against
// the real peers, but cannot break a connection or refuse one leaf on demand.

// upstream records what the leaves' links did; refuse[id] dials of id are refused.
type upstream struct {
	mu       sync.Mutex
	got      map[string][]string
	dials    map[string]int
	renewals map[string]int
	refuse   map[string]int
	poison   map[string]bool // every send of these leaves fails (the hub drops the link)
	done     chan struct{}   // the shared connection's
	renews   bool
}

func newUpstream(renews bool) *upstream {
	return &upstream{got: map[string][]string{}, dials: map[string]int{}, renewals: map[string]int{},
		refuse: map[string]int{}, poison: map[string]bool{}, done: make(chan struct{}), renews: renews}
}

func (u *upstream) count(m map[string]int, id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return m[id]
}

// breakConn breaks the shared connection; the next dials get a new one.
func (u *upstream) breakConn() {
	u.mu.Lock()
	defer u.mu.Unlock()
	close(u.done)
	u.done = make(chan struct{})
}

type fakeDialer struct {
	u  *upstream
	id string
}

func (d fakeDialer) Endpoint(token.Token) (string, string, error) { return "hub", "amqp", nil }

func (d fakeDialer) Dial(context.Context, token.Token) (link.Conn, error) {
	d.u.mu.Lock()
	defer d.u.mu.Unlock()
	if d.u.refuse[d.id] > 0 {
		d.u.refuse[d.id]--
		return nil, fmt.Errorf("put-token: %w", link.ErrRefused)
	}
	d.u.dials[d.id]++
	c := &fakeConn{u: d.u, id: d.id, done: d.u.done}
	if d.u.renews {
		return renewConn{c}, nil
	}
	return c, nil
}

type fakeConn struct {
	u    *upstream
	id   string
	done chan struct{}
}

func (c *fakeConn) Send(_ context.Context, m telemetry.Message) error {
	select {
	case <-c.done:
		return errors.New("connection broken")
	default:
	}
	c.u.mu.Lock()
	defer c.u.mu.Unlock()
	if c.u.poison[c.id] {
		return errors.New("link detached by the hub")
	}
	c.u.got[c.id] = append(c.u.got[c.id], string(m.Body))
	return nil
}
func (c *fakeConn) Done() <-chan struct{} { return c.done }
func (c *fakeConn) Err() error            { return errors.New("connection broken") }
func (c *fakeConn) Close(bool)            {}

type renewConn struct{ *fakeConn }

func (c renewConn) Renew(context.Context, token.Token) error {
	c.u.mu.Lock()
	defer c.u.mu.Unlock()
	c.u.renewals[c.id]++
	return nil
}

// tokens is a leaf's token source that counts the hub's refusals.
type tokens struct {
	token.Holder
	mu      sync.Mutex
	refused int
}

func (s *tokens) Invalidate() { s.mu.Lock(); s.refused++; s.mu.Unlock() }

func (s *tokens) set(v string) {
	now := time.Now()
	s.Set(token.Token{RequestedAt: now, Response: tokResponse(v, now)})
}

func refusals(s *tokens) int { s.mu.Lock(); defer s.mu.Unlock(); return s.refused }

// pumpRig runs a pump over n leaves with workers workers until the test ends.
type pumpRig struct {
	p   *pump
	q   *queue.Queue
	u   *upstream
	src map[string]*tokens
	ids []string
}

func startPump(t *testing.T, n, workers int, u *upstream, before func(*pumpRig)) *pumpRig {
	t.Helper()
	q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &pumpRig{p: newPump(q, backoff.Policy{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}, log, workers, n),
		q: q, u: u, src: map[string]*tokens{}}
	for i := range n {
		id := fmt.Sprintf("leaf-%03d", i)
		r.ids = append(r.ids, id)
		r.src[id] = &tokens{}
		r.p.add(id, fakeDialer{u: u, id: id}, r.src[id])
	}
	q.OnPut(r.p.schedule)
	if before != nil {
		before(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.p.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pump run: got %v, want nil", err)
		}
		q.Close()
	})
	return r
}

func (r *pumpRig) put(t *testing.T, id string, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if err := r.q.Put(id, telemetry.Message{Body: []byte(b)}); err != nil {
			t.Fatal(err)
		}
	}
}

// putAll puts bodies for every leaf, the leaves in parallel (sharing the queue's
// commits), each leaf's in order.
func (r *pumpRig) putAll(t *testing.T, bodies ...string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, id := range r.ids {
		wg.Go(func() {
			for _, b := range bodies {
				if err := r.q.Put(id, telemetry.Message{Body: []byte(b)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func (r *pumpRig) token(id, v string) {
	r.src[id].set(v)
	r.p.scheduleToken(id)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestPumpDeliversInOrderWithFewGoroutines: 300 leaves, 4 workers: every message
// queued before and after the start reaches the hub in its leaf's order and leaves the
// queue, and the pump runs no goroutine per leaf.
func TestPumpDeliversInOrderWithFewGoroutines(t *testing.T) {
	const n, workers, per = 300, 4, 6
	base := runtime.NumGoroutine()
	u := newUpstream(true)
	r := startPump(t, n, workers, u, func(r *pumpRig) { r.putAll(t, "m0", "m1", "m2") })
	for _, id := range r.ids {
		r.token(id, "t1-"+id)
	}
	r.putAll(t, "m3", "m4", "m5")
	eventually(t, "every message at the hub", func() bool { return r.q.Stats().Acked == n*per })
	if got := runtime.NumGoroutine() - base; got > workers+8 {
		t.Errorf("goroutines while %d leaves are connected: got %d more than before, want at most %d", n, got, workers+8)
	}
	want := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, id := range r.ids {
		if !slices.Equal(u.got[id], want) {
			t.Fatalf("%s at the hub: got %v, want %v", id, u.got[id], want)
		}
		if u.dials[id] != 1 {
			t.Errorf("%s dials: got %d, want 1", id, u.dials[id])
		}
	}
	if st := r.q.Stats(); st.Pending != 0 {
		t.Errorf("queue pending: got %d, want 0", st.Pending)
	}
}

// TestPumpRefusedLeafHoldsUpNoOther: a leaf whose token the hub refuses asks for a new
// one and backs off; the other leaves deliver meanwhile, and its messages go once its
// new token is accepted.
func TestPumpRefusedLeafHoldsUpNoOther(t *testing.T) {
	u := newUpstream(true)
	u.refuse["leaf-000"] = 1 << 20
	r := startPump(t, 3, 1, u, nil)
	for _, id := range r.ids {
		r.token(id, "t1-"+id)
		r.put(t, id, "a", "b")
	}
	eventually(t, "the good leaves' messages", func() bool { return r.q.Stats().Acked == 4 })
	eventually(t, "refusals reported", func() bool { return refusals(r.src["leaf-000"]) >= 2 })
	u.mu.Lock()
	u.refuse["leaf-000"] = 0
	u.mu.Unlock()
	r.token("leaf-000", "t2")
	eventually(t, "the refused leaf's messages after its new token", func() bool { return r.q.Stats().Acked == 6 })
	if got := u.count(u.dials, "leaf-001"); got != 1 {
		t.Errorf("a good leaf's dials: got %d, want 1", got)
	}
}

// TestPumpTokensAndLoss: a new token is put on an open connection that takes one
// (AMQP) and reconnects one that does not (MQTT); a broken connection is dialled again
// for every leaf on it, and messages queued meanwhile arrive.
func TestPumpTokensAndLoss(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		renews                bool
		wantDials, wantRenews int
	}{
		{name: "renewer", renews: true, wantDials: 2, wantRenews: 1},
		{name: "reconnect per token", renews: false, wantDials: 3, wantRenews: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(tc.renews)
			r := startPump(t, 5, 2, u, nil)
			for _, id := range r.ids {
				r.token(id, "t1-"+id)
			}
			eventually(t, "every leaf connected", func() bool { return r.p.Stats().Connects == 5 })
			for _, id := range r.ids {
				r.token(id, "t2-"+id)
			}
			eventually(t, "every new token taken", func() bool {
				s := r.p.Stats()
				return s.Renewals+s.Rotations == 5
			})
			u.breakConn()
			for _, id := range r.ids {
				r.put(t, id, "after")
			}
			eventually(t, "the messages after the break", func() bool { return r.q.Stats().Acked == 5 })
			for _, id := range r.ids {
				if d, n := u.count(u.dials, id), u.count(u.renewals, id); d != tc.wantDials || n != tc.wantRenews {
					t.Errorf("%s: got %d dials and %d renewals, want %d and %d", id, d, n, tc.wantDials, tc.wantRenews)
				}
			}
		})
	}
}

func tokResponse(v string, now time.Time) oapi.TokenResponse {
	return oapi.TokenResponse{Token: v, ServerTime: now, ExpiresAt: now.Add(time.Hour), RefreshAfter: now.Add(30 * time.Minute)}
}

// TestPumpConnectionsThatFailAtOnceBackOff: a leaf's link comes up but fails its first
// send, again and again (the hub detaching it on a message it will never take). Each
// such connection is one more failure in a row, so the leaf's reconnects back off to
// Max rather than coming every Min because the dial itself succeeded; the other leaf
// delivers meanwhile.
func TestPumpConnectionsThatFailAtOnceBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUpstream(true)
		u.poison["leaf-000"] = true
		q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		p := newPump(q, backoff.Policy{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0.999999 }},
			slog.New(slog.NewTextHandler(io.Discard, nil)), 2, 2)
		for _, id := range []string{"leaf-000", "leaf-001"} {
			src := &tokens{}
			src.set("t-" + id)
			p.add(id, fakeDialer{u: u, id: id}, src)
		}
		q.OnPut(p.schedule)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.run(ctx) }()
		for _, id := range []string{"leaf-000", "leaf-001"} {
			if err := q.Put(id, telemetry.Message{Body: []byte("m")}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Minute)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// 1, 2, 4, … 32 s, then a minute each: about 15 dials in 10 minutes.
		if n := u.count(u.dials, "leaf-000"); n > 25 {
			t.Errorf("dials of the failing leaf in 10 minutes: got %d, want the backoff to grow to its 1 min Max", n)
		}
		if got := u.got["leaf-001"]; len(got) != 1 {
			t.Errorf("the other leaf at the hub: got %v, want its message", got)
		}
	})
}
