package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/gateway"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// TestAMQPMultiplexedEndToEnd: three leaves with 6-second tokens minted by the real
// service through POST /token/batch — one speaking plain MQTT to the local broker (with a
// local password), one sending UDP datagrams, one TCP lines — reach the rhea peer over
// ONE AMQP connection, each message under its own leaf's identity (the peer checks each
// leaf's SAS token and authorizes each link by that leaf's token only). Tokens are
// renewed on the open connection, nothing is refused or expires, a C2D message comes
// back to the MQTT leaf's local topic, and the local broker refuses a stranger, a wrong
// password and a leaf publishing as another. Only leaves connected to the local broker
// get a C2D link.
func TestAMQPMultiplexedEndToEnd(t *testing.T) {
	leaves := []string{"lora-0001", "lora-0002", "lora-0003"}
	f := testpeer.NewGatewayFixture(t, "edge-amqp", leaves, 6*time.Second)
	peer := f.StartAMQP(t)
	r := startGateway(t, f, t.TempDir(), 1000, gateway.Options{
		Leaves:   intake.Leaves{"lora-0001": "local-pw", "lora-0002": "", "lora-0003": ""},
		Upstream: gateway.AMQP, DialAddr: peer.Addr, Properties: map[string]string{"via": "edge-amqp"},
		MQTTAddr: "127.0.0.1:0", UDPAddr: "127.0.0.1:0", LineAddr: "127.0.0.1:0",
	})

	mq, err := connectLeaf(t, r.gw.MQTTAddr(), "lora-0001", "local-pw")
	if err != nil {
		t.Fatal(err)
	}
	// Connected but not yet subscribed: the leaf gets no C2D link, so the hub keeps a
	// message sent now (instead of the gateway taking it for nobody) until it subscribes.
	testpeer.WaitFor(t, "lora-0001 on the AMQP connection", 10*time.Second, func() bool { return r.gw.Stats().AMQP.Attached >= 3 })
	if err := peer.C2D("lora-0001", "early"); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, "the early C2D message at the peer", 5*time.Second, func() bool { return len(peer.Events("c2d")) > 0 })
	if e := peer.Events("c2d")[0]; e.OK {
		t.Errorf("a C2D link was open for a leaf not subscribed locally: %+v", e)
	}
	mq.subscribe(t, "devices/lora-0001/messages/devicebound/#")
	testpeer.WaitFor(t, "the early C2D message at the leaf once subscribed", 10*time.Second, func() bool {
		for _, m := range mq.received() {
			if strings.HasSuffix(m, " early") {
				return true
			}
		}
		return false
	})

	// Refusals at the local broker.
	if _, err := connectLeaf(t, r.gw.MQTTAddr(), "stranger", ""); err == nil {
		t.Error("a client ID that is no leaf connected")
	}
	if _, err := connectLeaf(t, r.gw.MQTTAddr(), "lora-0001", "wrong"); err == nil {
		t.Error("a leaf with the wrong local password connected")
	}
	impostor, err := connectLeaf(t, r.gw.MQTTAddr(), "lora-0003", "")
	if err != nil {
		t.Fatal(err)
	}
	if impostor.publish("devices/lora-0002/messages/events/", "forged") {
		t.Error("lora-0003 published as lora-0002 and was acknowledged")
	}
	// lora-0001 has a local password: a UDP line, which carries none, must not speak
	// for it. Sent before lora-0001's own messages, so it would reach the hub first.
	sendLine(t, "udp", r.gw.UDPAddr(), "lora-0001 forged-by-udp")
	testpeer.WaitFor(t, "the forged line handled", 5*time.Second, func() bool {
		s := r.gw.Stats().Lines
		return s.Protected+s.Accepted > 0
	})

	var want []string
	end := time.Now().Add(14 * time.Second) // two token lifetimes: renewals on the open connection
	for i := 0; time.Now().Before(end); i++ {
		if !mq.publish(fmt.Sprintf("devices/lora-0001/messages/events/seq=%d", i), fmt.Sprint("mqtt-", i)) {
			t.Fatalf("leaf message %d not acknowledged", i)
		}
		sendLine(t, "udp", r.gw.UDPAddr(), fmt.Sprintf("lora-0002 udp-%d", i))
		sendLine(t, "tcp", r.gw.LineAddr(), fmt.Sprintf("lora-0003 line-%d\n", i))
		want = append(want, fmt.Sprint(i))
		time.Sleep(300 * time.Millisecond)
	}
	sendLine(t, "udp", r.gw.UDPAddr(), "unknown-leaf hello")
	sendLine(t, "udp", r.gw.UDPAddr(), "lora-0002")

	testpeer.WaitFor(t, "every message at the peer", 20*time.Second, func() bool {
		b := amqpBodies(peer)
		for _, i := range want {
			if !contains(b["lora-0001"], "mqtt-"+i) || !contains(b["lora-0002"], "udp-"+i) || !contains(b["lora-0003"], "line-"+i) {
				return false
			}
		}
		return true
	})
	for _, e := range peer.Events("message") {
		if e.Properties["via"] != "edge-amqp" {
			t.Errorf("message %q of %s: properties %v, want via=edge-amqp", e.Body, e.Device, e.Properties)
		}
		if e.Device == "lora-0002" && e.Body == "forged" || e.Body == "forged-by-udp" {
			t.Errorf("a forged message reached the hub: %+v", e)
		}
	}
	if err := peer.C2D("lora-0001", "set-interval 60"); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, "the C2D message at the leaf", 10*time.Second, func() bool {
		for _, m := range mq.received() {
			if strings.HasPrefix(m, "devices/lora-0001/messages/devicebound/") && strings.HasSuffix(m, " set-interval 60") {
				return true
			}
		}
		return false
	})

	opens, renewals := len(peer.Events("open")), 0
	for _, e := range peer.Events("cbs") {
		if !e.OK {
			t.Errorf("peer refused a put-token: %+v", e)
		}
		if e.Renewal {
			renewals++
		}
	}
	for _, e := range peer.Events("link") {
		if !e.OK {
			t.Errorf("peer refused a link: %+v", e)
		}
		// C2D links only for leaves connected to the local broker: never the UDP leaf.
		if strings.HasSuffix(e.Address, "/messages/devicebound") && e.Device == "lora-0002" {
			t.Errorf("a C2D link for a leaf that never connected locally: %+v", e)
		}
	}
	if opens != 1 {
		t.Errorf("AMQP connections: got %d, want 1 multiplexing every leaf", opens)
	}
	if renewals < len(leaves) {
		t.Errorf("renewals on the open connection: got %d, want at least one per leaf", renewals)
	}
	if n := len(peer.Events("expired")); n != 0 {
		t.Errorf("tokens expired on the open connection: %d, want 0", n)
	}
	s := r.gw.Stats()
	if s.MQTT.Refused != 2 || s.MQTT.Denied != 1 || s.Lines.Unknown != 1 || s.Lines.Malformed != 1 || s.Lines.Protected != 1 {
		t.Errorf("intake counters: mqtt %+v lines %+v; want 2 refused, 1 denied, 1 unknown, 1 protected, 1 malformed", s.MQTT, s.Lines)
	}
	// Batched, whatever the machine's load: the first call carries every leaf, so
	// there are at least len(leaves)-1 fewer calls than tokens (how many later
	// refreshes coalesce depends on timing and is not asserted).
	if s.Tokens.Calls > s.Tokens.Fetched-(len(leaves)-1) || s.Tokens.Fetched < 2*len(leaves) {
		t.Errorf("token calls: %+v, want batch calls carrying several tokens", s.Tokens)
	}
	// The peer records a message before the gateway reads its disposition.
	testpeer.WaitFor(t, "every accepted message acknowledged in the queue", 10*time.Second, func() bool {
		return r.gw.Stats().Queue.Pending == 0
	})
	r.stop(t)
	if s := r.gw.Stats(); s.Queue.Pending != 0 || s.Queue.Dropped != 0 {
		t.Errorf("queue after delivery: %+v, want nothing pending or dropped", s.Queue)
	}
	noSecretsIn(t, r.logs.String(), nil)
	t.Logf("stats %+v; peer: %d opens, %d cbs (%d renewals)", r.gw.Stats(), opens, len(peer.Events("cbs")), renewals)
}

// TestAMQPPeerHoldsLeavesApart: on one multiplexed connection, a leaf's token admits
// only that leaf — a put-token naming another leaf, and a link to another leaf's
// address, are refused — so the peer the gateway tests rely on would catch a gateway
// sending as the wrong leaf.
func TestAMQPPeerHoldsLeavesApart(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-apart", []string{"leaf-a", "leaf-b"}, time.Minute)
	peer := f.StartAMQP(t)
	results := f.LeafTokens(t, "leaf-a", "leaf-b")
	a, b := results[0].Token, results[1].Token
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := amqplink.Connect(ctx, a, amqplink.ConnectOptions{Auth: amqplink.CBS, DialAddr: peer.Addr, RootCAs: f.CA.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cbs, err := amqplink.OpenCBS(ctx, sess, a.Response.Amqp.Cbs.Node, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := cbs.PutToken(ctx, a); err != nil {
		t.Fatalf("put-token of leaf-a: %v", err)
	}
	// leaf-a's token under leaf-b's name.
	forged := a
	forged.Response.Amqp = b.Response.Amqp
	if err := cbs.PutToken(ctx, forged); err == nil {
		t.Error("put-token of leaf-a's token for leaf-b: accepted")
	}
	if s, err := sess.NewSender(ctx, b.Response.Amqp.Address, nil); err == nil {
		if err := s.Send(ctx, amqp.NewMessage([]byte("as b")), nil); err == nil {
			t.Error("a link to leaf-b's address with only leaf-a's token carried a message")
		}
	}
	s, err := sess.NewSender(ctx, a.Response.Amqp.Address, nil)
	if err != nil {
		t.Fatalf("leaf-a's own link: %v", err)
	}
	if err := s.Send(ctx, amqp.NewMessage([]byte("as a")), nil); err != nil {
		t.Fatalf("leaf-a's own message: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := amqpBodies(peer); len(got["leaf-b"]) != 0 || !contains(got["leaf-a"], "as a") {
		t.Errorf("peer messages: got %v, want only leaf-a's", got)
	}
	var refusedLinks int
	for _, e := range peer.Events("link") {
		if !e.OK {
			refusedLinks++
		}
	}
	if refusedLinks != 1 {
		t.Errorf("refused links: got %d, want 1", refusedLinks)
	}
}

// TestReleasedMessageIsSentAgain: a hub that settles a message as released (or
// modified) has not accepted it — AMQP's "not processed, send it again". Such a message
// must stay queued and be sent again until the hub accepts it, never be removed from
// the queue as if the hub had it.
func TestReleasedMessageIsSentAgain(t *testing.T) {
	leaves := []string{"lora-0001"}
	f := testpeer.NewGatewayFixture(t, "edge-amqp", leaves, time.Minute)
	peer := f.StartAMQP(t)
	peer.Release(t, "lora-0001", 2)
	r := startGateway(t, f, t.TempDir(), 1000, gateway.Options{
		Upstream: gateway.AMQP, DialAddr: peer.Addr, LineAddr: "127.0.0.1:0",
	})
	sendLine(t, "tcp", r.gw.LineAddr(), "lora-0001 one\nlora-0001 two\nlora-0001 three\n")
	testpeer.WaitFor(t, "every message accepted at the peer", 20*time.Second, func() bool {
		b := amqpBodies(peer)["lora-0001"]
		return contains(b, "one") && contains(b, "two") && contains(b, "three")
	})
	if got := len(peer.Events("released")); got != 2 {
		t.Errorf("released: got %d, want 2", got)
	}
	if got := amqpBodies(peer)["lora-0001"]; strings.Join(got, ",") != "one,two,three" {
		t.Errorf("accepted at the peer: got %v, want one,two,three in order", got)
	}
	// The peer records a message before the gateway reads its disposition: wait for
	// the gateway's side too before stopping it.
	testpeer.WaitFor(t, "three messages acknowledged in the queue", 10*time.Second, func() bool {
		return r.gw.Stats().Queue.Acked >= 3
	})
	r.stop(t)
	if s := r.gw.Stats().Queue; s.Pending != 0 || s.Acked != 3 {
		t.Errorf("queue: got %+v, want 3 acked, nothing pending", s)
	}
}

// TestRejectedMessage: a message the hub rejects for what it is (here over its size
// limit) can never be delivered, so it must not hold the leaf's later messages back: it
// is dropped from the queue and counted, and the next ones go on over the same link. A
// message rejected for another reason (throttling) stays queued and is sent again.
func TestRejectedMessage(t *testing.T) {
	leaves := []string{"lora-0001"}
	f := testpeer.NewGatewayFixture(t, "edge-amqp", leaves, time.Minute)
	peer := f.StartAMQP(t)
	peer.Reject(t, "lora-0001", "amqp:link:message-size-exceeded")
	peer.Reject(t, "lora-0001", "amqp:resource-limit-exceeded")
	r := startGateway(t, f, t.TempDir(), 1000, gateway.Options{
		Upstream: gateway.AMQP, DialAddr: peer.Addr, LineAddr: "127.0.0.1:0",
	})
	sendLine(t, "tcp", r.gw.LineAddr(), "lora-0001 one\nlora-0001 two\nlora-0001 three\n")
	testpeer.WaitFor(t, "the later messages accepted at the peer", 20*time.Second, func() bool {
		b := amqpBodies(peer)["lora-0001"]
		return contains(b, "two") && contains(b, "three")
	})
	var rejected []string
	for _, e := range peer.Events("rejected") {
		rejected = append(rejected, e.Body+" "+e.Reason)
	}
	if want := "[one amqp:link:message-size-exceeded two amqp:resource-limit-exceeded]"; fmt.Sprint(rejected) != want {
		t.Errorf("rejected at the peer: got %v, want %s", rejected, want)
	}
	if got := amqpBodies(peer)["lora-0001"]; strings.Join(got, ",") != "two,three" {
		t.Errorf("accepted at the peer: got %v, want two,three in order", got)
	}
	testpeer.WaitFor(t, "three messages off the queue", 10*time.Second, func() bool {
		return r.gw.Stats().Queue.Acked >= 3
	})
	st := r.gw.Stats()
	r.stop(t)
	if st.Links.Rejected != 1 || st.Links.Sent != 2 {
		t.Errorf("links: got %d rejected, %d sent; want 1 and 2", st.Links.Rejected, st.Links.Sent)
	}
	if st.Links.Lost != 1 || st.AMQP.LinkAttaches != 2 {
		t.Errorf("links: got %d lost, %d link attaches; want 1 and 2 (only the throttled message costs the link)", st.Links.Lost, st.AMQP.LinkAttaches)
	}
	if s := r.gw.Stats().Queue; s.Pending != 0 || s.Acked != 3 {
		t.Errorf("queue: got %+v, want 3 acked (one of them dropped), nothing pending", s)
	}
}
