package gateway_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/gateway"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// TestOutageAndRestartLoseNothing: the hub is unreachable (a proxy switched off) while
// leaves send; the gateway is stopped and started again on the same queue directory,
// more messages arrive, then the hub comes back: every accepted message reaches the hub
// under its leaf's identity, and the queue ends empty with nothing dropped.
func TestOutageAndRestartLoseNothing(t *testing.T) {
	leaves := []string{"meter-1", "meter-2"}
	f := testpeer.NewGatewayFixture(t, "edge-outage", leaves, time.Minute)
	peer := f.StartAMQP(t)
	proxy := testpeer.StartProxy(t, peer.Addr)
	proxy.SetDown(true)
	dir := t.TempDir()
	o := gateway.Options{Upstream: gateway.AMQP, DialAddr: proxy.Addr, UDPAddr: "127.0.0.1:0", LineAddr: "127.0.0.1:0"}

	send := func(r *rig, from, to int) {
		var lines strings.Builder // one connection: the lines are taken in order
		for i := from; i < to; i++ {
			fmt.Fprintf(&lines, "meter-1 a-%d\nmeter-2 b-%d\n", i, i)
		}
		sendLine(t, "tcp", r.gw.LineAddr(), lines.String())
		testpeer.WaitFor(t, "messages accepted", 10*time.Second, func() bool { return r.gw.Stats().Lines.Accepted == 2*(to-from) })
	}
	first := startGateway(t, f, dir, 1000, o)
	send(first, 0, 20)
	if err := first.wait(); err != nil {
		t.Fatal(err)
	}
	if s := first.gw.Stats(); s.Queue.Pending != 40 || s.Queue.Acked != 0 {
		t.Fatalf("queue before restart: %+v, want 40 pending, none acknowledged", s.Queue)
	}

	second := startGateway(t, f, dir, 1000, o)
	send(second, 20, 30)
	proxy.SetDown(false)
	testpeer.WaitFor(t, "every message at the hub", 30*time.Second, func() bool {
		b := amqpBodies(peer)
		for i := range 30 {
			if !contains(b["meter-1"], fmt.Sprint("a-", i)) || !contains(b["meter-2"], fmt.Sprint("b-", i)) {
				return false
			}
		}
		return true
	})
	testpeer.WaitFor(t, "the queue to empty", 10*time.Second, func() bool { return second.gw.Stats().Queue.Pending == 0 })
	second.stop(t)
	if s := second.gw.Stats(); s.Queue.Pending != 0 || s.Queue.Dropped != 0 {
		t.Errorf("queue at the end: %+v, want empty and nothing dropped", s.Queue)
	}
	// In order per leaf: the queue hands a leaf's messages on one at a time.
	b := amqpBodies(peer)
	for i, body := range dedupe(b["meter-1"]) {
		if body != fmt.Sprint("a-", i) {
			t.Fatalf("meter-1 message %d: got %q, want a-%d (order kept)", i, body, i)
		}
	}
}

// TestOverflowDropsOldestCounted: with the hub down and a queue of 5, eight accepted
// messages leave the newest five; the three oldest are dropped, counted and logged, and
// the five arrive once the hub is back.
func TestOverflowDropsOldestCounted(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-full", []string{"tank-1"}, time.Minute)
	peer := f.StartAMQP(t)
	proxy := testpeer.StartProxy(t, peer.Addr)
	proxy.SetDown(true)
	r := startGateway(t, f, t.TempDir(), 5, gateway.Options{Upstream: gateway.AMQP, DialAddr: proxy.Addr, LineAddr: "127.0.0.1:0"})
	for i := range 8 {
		sendLine(t, "tcp", r.gw.LineAddr(), fmt.Sprintf("tank-1 level-%d\n", i))
		testpeer.WaitFor(t, "message accepted", 5*time.Second, func() bool { return r.gw.Stats().Lines.Accepted == i+1 })
	}
	if s := r.gw.Stats().Queue; s.Dropped != 3 || s.Pending != 5 {
		t.Fatalf("queue: %+v, want 3 dropped, 5 pending", s)
	}
	if !strings.Contains(r.logs.String(), "oldest messages dropped") {
		t.Error("drops not logged")
	}
	proxy.SetDown(false)
	testpeer.WaitFor(t, "the newest five at the hub", 30*time.Second, func() bool {
		return hasAll(amqpBodies(peer)["tank-1"], "level-3", "level-4", "level-5", "level-6", "level-7")
	})
	for _, body := range amqpBodies(peer)["tank-1"] {
		if body == "level-0" || body == "level-1" || body == "level-2" {
			t.Errorf("dropped message %s reached the hub", body)
		}
	}
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
