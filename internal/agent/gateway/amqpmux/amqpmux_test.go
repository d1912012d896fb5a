package amqpmux_test

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/gateway/amqpmux"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// TestLinkSlots: with one link slot, a second leaf's send finds no slot (ErrBusy) while
// the first leaf's link is attached, and goes through once the first link was detached
// for idleness — both leaves' messages reach the rhea peer as themselves, on one
// connection.
func TestLinkSlots(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-slots", []string{"leaf-a", "leaf-b"}, time.Minute)
	peer := f.StartAMQP(t)
	results := f.LeafTokens(t, "leaf-a", "leaf-b")
	m := amqpmux.New(amqpmux.Options{DialAddr: peer.Addr, RootCAs: f.CA.Pool(), MaxLinks: 1,
		LinkIdle: time.Second, SlotWait: 100 * time.Millisecond, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer m.Close()
	var conns []link.Conn
	for _, r := range results {
		c, err := m.Leaf(r.DeviceID).Dial(t.Context(), r.Token)
		if err != nil {
			t.Fatalf("dial %s: %v", r.DeviceID, err)
		}
		defer c.Close(true)
		conns = append(conns, c)
	}
	if err := conns[0].Send(t.Context(), telemetry.Message{Body: []byte("a1")}); err != nil {
		t.Fatal(err)
	}
	if err := conns[1].Send(t.Context(), telemetry.Message{Body: []byte("b1")}); !errors.Is(err, amqpmux.ErrBusy) {
		t.Fatalf("second leaf while the only slot is taken: got %v, want ErrBusy", err)
	}
	time.Sleep(1500 * time.Millisecond) // leaf-a's link idles out
	if err := conns[1].Send(t.Context(), telemetry.Message{Body: []byte("b1")}); err != nil {
		t.Fatalf("second leaf after the first link idled out: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	got := map[string]string{}
	for _, e := range peer.Events("message") {
		got[e.Body] = e.Device
	}
	if got["a1"] != "leaf-a" || got["b1"] != "leaf-b" {
		t.Errorf("peer messages: got %v, want a1 from leaf-a and b1 from leaf-b", got)
	}
	s := m.Stats()
	if s.Connects != 1 || s.LinkAttaches != 2 || s.Busy != 1 || s.Sent != 2 {
		t.Errorf("stats: got %+v, want 1 connection, 2 link attaches, 1 busy, 2 sent", s)
	}
	if n := len(peer.Events("open")); n != 1 {
		t.Errorf("connections: got %d, want 1", n)
	}
}

// TestC2DRotation: three leaves want C2D but there is one receiver slot, rotated every
// second. The rhea peer keeps each leaf's C2D message while the leaf has no link (as
// IoT Hub does); every leaf gets its own message, as itself, once its turn comes.
func TestC2DRotation(t *testing.T) {
	ids := []string{"leaf-a", "leaf-b", "leaf-c"}
	f := testpeer.NewGatewayFixture(t, "edge-c2d", ids, time.Minute)
	peer := f.StartAMQP(t)
	results := f.LeafTokens(t, ids...)
	var mu sync.Mutex
	got := map[string][]string{}
	m := amqpmux.New(amqpmux.Options{DialAddr: peer.Addr, RootCAs: f.CA.Pool(), MaxReceivers: 1,
		ReceiverDwell: time.Second, Timeout: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnC2D: func(leaf string, msg telemetry.Message) {
			mu.Lock()
			got[leaf] = append(got[leaf], string(msg.Body))
			mu.Unlock()
		}})
	defer m.Close()
	for _, r := range results {
		if r.Err != nil {
			t.Fatalf("token of %s: %v", r.DeviceID, r.Err)
		}
		m.SetC2D(r.DeviceID, true)
		c, err := m.Leaf(r.DeviceID).Dial(t.Context(), r.Token)
		if err != nil {
			t.Fatalf("dial %s: %v", r.DeviceID, err)
		}
		defer c.Close(true)
	}
	for _, id := range ids {
		if err := peer.C2D(id, "for-"+id); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := 0
		for _, id := range ids {
			if slices.Contains(got[id], "for-"+id) {
				n++
			}
		}
		mu.Unlock()
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("C2D after 20 s: got %v, want each leaf's own message", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	for leaf, bodies := range got {
		for _, b := range bodies {
			if b != "for-"+leaf {
				t.Errorf("leaf %s got %q, another leaf's message", leaf, b)
			}
		}
	}
	mu.Unlock()
	if s := m.Stats(); s.C2DRotations < 2 || s.C2DAttaches < 3 || s.Connects != 1 {
		t.Errorf("stats: %+v, want at least 2 rotations and 3 C2D attaches on one connection", s)
	}
}

// TestC2DLinkSurvivesRedial: a leaf whose loop closes its connection object and dials
// again (as after a busy send) keeps its C2D link: one attach, and C2D still arrives.
func TestC2DLinkSurvivesRedial(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-redial", []string{"leaf-a"}, time.Minute)
	peer := f.StartAMQP(t)
	results := f.LeafTokens(t, "leaf-a")
	got := make(chan string, 1)
	m := amqpmux.New(amqpmux.Options{DialAddr: peer.Addr, RootCAs: f.CA.Pool(), Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnC2D:  func(leaf string, msg telemetry.Message) { got <- leaf + " " + string(msg.Body) }})
	defer m.Close()
	m.SetC2D("leaf-a", true)
	for range 3 {
		c, err := m.Leaf("leaf-a").Dial(t.Context(), results[0].Token)
		if err != nil {
			t.Fatal(err)
		}
		c.Close(true)
	}
	c, err := m.Leaf("leaf-a").Dial(t.Context(), results[0].Token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(true)
	if err := peer.C2D("leaf-a", "after-redial"); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "leaf-a after-redial" {
			t.Fatalf("C2D: got %q", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no C2D after the re-dials")
	}
	if s := m.Stats(); s.C2DAttaches != 1 || s.Attached != 4 {
		t.Errorf("stats: %+v, want 4 dials and 1 C2D attach", s)
	}
}

// TestHubCertificateCheckedAtVerifyTime: the shared connection checks the hub's
// certificate as of Options.VerifyTime (tokenagent passes the clock corrected by the
// token service's), not the system clock: refused at 1970, accepted now.
func TestHubCertificateCheckedAtVerifyTime(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-clock", []string{"leaf-a"}, time.Minute)
	peer := f.StartAMQP(t)
	r := f.LeafTokens(t, "leaf-a")[0]
	for _, tc := range []struct {
		name   string
		at     func() time.Time
		wantOK bool
	}{
		{"1970", func() time.Time { return time.Unix(0, 0) }, false},
		{"now", time.Now, true},
	} {
		m := amqpmux.New(amqpmux.Options{DialAddr: peer.Addr, RootCAs: f.CA.Pool(), VerifyTime: tc.at,
			Timeout: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		c, err := m.Leaf(r.DeviceID).Dial(t.Context(), r.Token)
		if c != nil {
			c.Close(true)
		}
		m.Close()
		if (err == nil) != tc.wantOK || (err != nil && !strings.Contains(err.Error(), "not yet valid")) {
			t.Errorf("hub certificate checked at %s: got %v, want ok %v", tc.name, err, tc.wantOK)
		}
	}
}
