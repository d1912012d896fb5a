package amqpmux_test

import (
	"errors"
	"io"
	"log/slog"
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
	peer := testpeer.StartAMQP(t, testpeer.AMQPOptions{Hub: testpeer.Hub, HubName: testpeer.HubName,
		Cert: f.CA.Issue(t, testpeer.Hub), Keys: f.LeafKeys})
	results, err := f.Fetcher(t).Batch(t.Context(), []string{"leaf-a", "leaf-b"})
	if err != nil || results[0].Err != nil || results[1].Err != nil {
		t.Fatalf("batch: %v %+v", err, results)
	}
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
