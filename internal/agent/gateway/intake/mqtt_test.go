package intake_test

import (
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// localBroker is an intake.MQTT on loopback over a real queue, with the reports it
// made of leaves wanting their C2D messages ("+leaf") and no longer ("-leaf").
type localBroker struct {
	m *intake.MQTT
	q *queue.Queue

	mu       sync.Mutex
	presence []string
}

func startBroker(t *testing.T, leaves intake.Leaves) *localBroker {
	t.Helper()
	q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	b := &localBroker{q: q}
	b.m, err = intake.ListenMQTT(intake.MQTTOptions{Addr: "127.0.0.1:0", Leaves: leaves, Sink: q,
		OnC2DWanted: func(leaf string, on bool) {
			b.mu.Lock()
			defer b.mu.Unlock()
			if on {
				b.presence = append(b.presence, "+"+leaf)
			} else {
				b.presence = append(b.presence, "-"+leaf)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	go b.m.Serve()
	t.Cleanup(func() { b.m.Close(); q.Close() })
	return b
}

func (b *localBroker) saw(event string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.presence {
		if e == event {
			return true
		}
	}
	return false
}

// leaf is a local MQTT client whose TCP connection the test can cut (so the broker
// publishes its will, as after a crash or a pulled cable).
type leaf struct {
	cl paho.Client

	mu   sync.Mutex
	conn net.Conn
	rx   []string
}

func dialLeaf(addr, id string, will *[2]string) (*leaf, error) {
	l := &leaf{}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.Dial("tcp", u.Host)
			l.mu.Lock()
			l.conn = c
			l.mu.Unlock()
			return c, err
		})
	if will != nil {
		o.SetWill(will[0], will[1], 1, false)
	}
	l.cl = paho.NewClient(o)
	tok := l.cl.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, tok.Error()
	}
	return l, nil
}

func (l *leaf) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conn.Close()
}

func (l *leaf) subscribe(t *testing.T, filter string) {
	t.Helper()
	tok := l.cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.rx = append(l.rx, m.Topic()+" "+string(m.Payload()))
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (l *leaf) received() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.rx...)
}

// TestWillCannotReachAnotherLeaf: a will message is published by the broker itself when
// its client's connection breaks, past the publish ACL, so a leaf could name another
// leaf's C2D topic as its will and forge a cloud-to-device message to it (or to its own
// C2D topic, or anywhere). A connection whose will is not on the leaf's own events
// topic is refused; a will on its own events topic is allowed.
func TestWillCannotReachAnotherLeaf(t *testing.T) {
	b := startBroker(t, intake.Leaves{"valve": "", "mallory": "", "honest": ""})
	victim, err := dialLeaf(b.m.Addr(), "valve", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.cl.Disconnect(0)
	victim.subscribe(t, intake.C2DTopic("valve")+"#")

	for _, topic := range []string{
		intake.C2DTopic("valve") + "cmd=open",
		intake.C2DTopic("mallory"),
		intake.EventsTopic("valve"),
		"devices/mallory/messages/eventsX",
		"anything",
	} {
		if l, err := dialLeaf(b.m.Addr(), "mallory", &[2]string{topic, "OPEN"}); err == nil {
			l.subscribe(t, intake.C2DTopic("mallory")+"#") // so its leaving is reported
			l.cut()                                        // the broker now publishes the will
			testpeer.WaitFor(t, "mallory gone", 5*time.Second, func() bool { return b.saw("-mallory") })
			t.Errorf("connection with a will on %q accepted", topic)
		}
	}
	// A will on the leaf's own events topic is what IoT Hub allows.
	honest, err := dialLeaf(b.m.Addr(), "honest", &[2]string{intake.EventsTopic("honest") + "state=lost", "bye"})
	if err != nil {
		t.Fatalf("will on the leaf's own events topic refused: %v", err)
	}
	honest.subscribe(t, intake.C2DTopic("honest")+"#") // so its leaving is reported
	honest.cut()
	testpeer.WaitFor(t, "honest gone", 5*time.Second, func() bool { return b.saw("-honest") })

	// Anything the wills sent reached valve's connection before this message does.
	if err := b.m.Deliver("valve", telemetry.Message{Body: []byte("real")}); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, "the real C2D message", 5*time.Second, func() bool { return len(victim.received()) > 0 })
	for _, got := range victim.received() {
		if !strings.HasSuffix(got, " real") {
			t.Errorf("valve received %q, not from the hub", got)
		}
	}
	if s := b.m.Stats(); s.Refused != 5 {
		t.Errorf("refused: got %d, want 5 (%+v)", s.Refused, s)
	}
}

// TestDeliverToAnUnsubscribedLeafIsReported: a cloud-to-device message for a leaf with
// no local subscription reaches nobody. Deliver says so (the gateway logs it) and counts
// it as undelivered, not as delivered; once the leaf subscribes it is delivered.
func TestDeliverToAnUnsubscribedLeafIsReported(t *testing.T) {
	b := startBroker(t, intake.Leaves{"valve": ""})
	l, err := dialLeaf(b.m.Addr(), "valve", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.cl.Disconnect(0)
	if err := b.m.Deliver("valve", telemetry.Message{Body: []byte("lost")}); !errors.Is(err, intake.ErrNoSubscriber) {
		t.Errorf("Deliver without a subscription: got %v, want ErrNoSubscriber", err)
	}
	if s := b.m.Stats(); s.Delivered != 0 || s.Undelivered != 1 {
		t.Errorf("stats: got %+v, want 0 delivered, 1 undelivered", s)
	}
	l.subscribe(t, intake.C2DTopic("valve")+"#")
	if err := b.m.Deliver("valve", telemetry.Message{Body: []byte("kept"), Properties: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, "the message at the leaf", 5*time.Second, func() bool { return len(l.received()) == 1 })
	if got := l.received()[0]; got != intake.C2DTopic("valve")+"k=v kept" {
		t.Errorf("received %q", got)
	}
	if s := b.m.Stats(); s.Delivered != 1 {
		t.Errorf("delivered: got %d, want 1", s.Delivered)
	}
}

func (b *localBroker) events() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.presence...)
}

// TestC2DWantedFollowsTheSubscription: a leaf wants its cloud-to-device messages while
// one of its connections is subscribed to its C2D topic — not merely connected (a
// telemetry-only leaf never subscribes: over AMQP the hub must keep its messages rather
// than hand them to a broker where nobody takes them).
func TestC2DWantedFollowsTheSubscription(t *testing.T) {
	b := startBroker(t, intake.Leaves{"valve": ""})
	l, err := dialLeaf(b.m.Addr(), "valve", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Connected, not subscribed: a message delivered now reaches nobody.
	if err := b.m.Deliver("valve", telemetry.Message{Body: []byte("x")}); !errors.Is(err, intake.ErrNoSubscriber) {
		t.Fatalf("Deliver: %v", err)
	}
	if got := b.events(); len(got) != 0 {
		t.Errorf("connected without a subscription: reports %v, want none", got)
	}
	l.subscribe(t, intake.C2DTopic("valve")+"#")
	testpeer.WaitFor(t, "+valve", 5*time.Second, func() bool { return b.saw("+valve") })
	if tok := l.cl.Unsubscribe(intake.C2DTopic("valve") + "#"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	testpeer.WaitFor(t, "-valve", 5*time.Second, func() bool { return b.saw("-valve") })
	l.subscribe(t, intake.C2DTopic("valve")+"#")
	l.cl.Disconnect(0)
	testpeer.WaitFor(t, "four reports", 5*time.Second, func() bool { return len(b.events()) == 4 })
	if got := strings.Join(b.events(), " "); got != "+valve -valve +valve -valve" {
		t.Errorf("reports: got %q, want +valve -valve +valve -valve", got)
	}
}
