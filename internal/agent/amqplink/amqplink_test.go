package amqplink_test

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestLinkAgainstRhea sends telemetry through a real AMQP 1.0 peer (rhea) that checks
// tokens like IoT Hub and closes connections whose token expires, with 4-second tokens:
// with SASL PLAIN the link reconnects for each new token, with CBS it renews the token
// on the open connection. Every message must arrive; nothing may be refused or expire.
func TestLinkAgainstRhea(t *testing.T) {
	for _, auth := range []amqplink.Auth{amqplink.Plain, amqplink.CBS} {
		t.Run(string(auth), func(t *testing.T) {
			f := testpeer.NewFixture(t, "meter-"+string(auth), 4*time.Second, domain.Hub{})
			peer := testpeer.StartAMQP(t, testpeer.AMQPOptions{Hub: testpeer.Hub, HubName: testpeer.HubName,
				Cert: f.CA.Issue(t, testpeer.Hub), Keys: map[string][]byte{f.DeviceID: f.Key}})
			k := f.Keeper(t, "")
			msgs := make(chan telemetry.Message)
			link := amqplink.New(amqplink.Options{
				Common: link.Common{Source: k, Messages: msgs, DialAddr: peer.Addr, RootCAs: f.CA.Pool(),
					Properties: map[string]string{"source": "test"},
					Backoff:    backoff.Policy{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
					Timeout:    5 * time.Second, Logger: discard()},
				Auth: auth,
			})
			stop := testpeer.Run(t, link.Run)

			const want = 3
			progress := func() int {
				s := link.Stats()
				if auth == amqplink.CBS {
					return s.Renewals
				}
				return s.Rotations
			}
			sent := testpeer.SendUntil(t, msgs, func() bool { return progress() >= want },
				func() string { return fmt.Sprintf("%+v, want %d token changes", link.Stats(), want) })
			if err := stop(); err != nil {
				t.Fatalf("Run: got %v, want nil", err)
			}
			time.Sleep(200 * time.Millisecond) // let the peer's last event lines arrive
			seen := map[string]bool{}
			for _, e := range peer.Events("message") {
				seen[e.Body] = true
				if e.Device != f.DeviceID || e.Properties["source"] != "test" {
					t.Fatalf("message %q: device %q properties %v", e.Body, e.Device, e.Properties)
				}
			}
			for i := range sent {
				if !seen["m"+strconv.Itoa(i)] {
					t.Errorf("message m%d never reached the peer", i)
				}
			}
			for _, kind := range []string{"auth", "cbs", "link"} {
				for _, e := range peer.Events(kind) {
					if !e.OK {
						t.Errorf("peer refused: %+v", e)
					}
				}
			}
			if n := len(peer.Events("expired")); n != 0 {
				t.Errorf("peer closed %d connections for an expired token, want 0", n)
			}
			t.Logf("%s: sent %d; link %+v; keeper %+v; peer: %d auth, %d cbs, %d opens",
				auth, sent, link.Stats(), k.Stats(), len(peer.Events("auth")), len(peer.Events("cbs")), len(peer.Events("open")))
		})
	}
}

// TestReleasedMessageIsSentAgain: a message the peer settles as released was not
// accepted; the link sends it again (after reconnecting) instead of counting it as
// delivered and taking the next one.
func TestReleasedMessageIsSentAgain(t *testing.T) {
	f, peer := startPeer(t, "meter-release", 0)
	peer.Release(t, f.DeviceID, 1)
	msgs := make(chan telemetry.Message)
	l := cbsLink(t, f, peer, msgs)
	stop := testpeer.Run(t, l.Run)
	for _, body := range []string{"one", "two"} {
		msgs <- telemetry.Message{Body: []byte(body)}
	}
	testpeer.WaitFor(t, "both messages accepted", 10*time.Second, func() bool { return len(peer.Events("message")) >= 2 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var got []string
	for _, e := range peer.Events("message") {
		got = append(got, e.Body)
	}
	if fmt.Sprint(got) != "[one two]" || len(peer.Events("released")) != 1 {
		t.Errorf("accepted %v, released %d: want [one two] after one release", got, len(peer.Events("released")))
	}
}

// TestOversizeMessageIsDropped: a peer that rejects a message for its size (as IoT Hub
// rejects one over 256 KB) will never take it; the link drops it, counts it and sends
// the next one on the same connection instead of sending it again forever.
func TestOversizeMessageIsDropped(t *testing.T) {
	f, peer := startPeer(t, "meter-oversize", 16)
	msgs := make(chan telemetry.Message)
	l := cbsLink(t, f, peer, msgs)
	stop := testpeer.Run(t, l.Run)
	for _, body := range []string{"one", "a body longer than sixteen bytes", "three"} {
		select {
		case msgs <- telemetry.Message{Body: []byte(body)}:
		case <-time.After(10 * time.Second):
			t.Fatalf("the link took no message within 10 s; stuck before %q", body)
		}
	}
	testpeer.WaitFor(t, "the last message accepted", 10*time.Second, func() bool { return len(peer.Events("message")) >= 2 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var got []string
	for _, e := range peer.Events("message") {
		got = append(got, e.Body)
	}
	rejected := peer.Events("rejected")
	if fmt.Sprint(got) != "[one three]" || len(rejected) != 1 || rejected[0].Reason != "amqp:link:message-size-exceeded" {
		t.Errorf("accepted %v, rejected %+v: want [one three] and the long one rejected once for its size", got, rejected)
	}
	if s := l.Stats(); s.Rejected != 1 || s.Sent != 2 || s.Connects != 1 || s.Lost != 0 {
		t.Errorf("stats %+v: want 1 rejected, 2 sent, on one connection never lost", s)
	}
}

// startPeer starts the rhea peer for a new device fixture with one-minute tokens;
// maxMessageBytes 0 is the peer's default (IoT Hub's 256 KB).
func startPeer(t *testing.T, device string, maxMessageBytes int) (*testpeer.Fixture, *testpeer.AMQPPeer) {
	t.Helper()
	f := testpeer.NewFixture(t, device, time.Minute, domain.Hub{})
	return f, testpeer.StartAMQP(t, testpeer.AMQPOptions{Hub: testpeer.Hub, HubName: testpeer.HubName,
		Cert: f.CA.Issue(t, testpeer.Hub), Keys: map[string][]byte{f.DeviceID: f.Key}, MaxMessageBytes: maxMessageBytes})
}

// cbsLink is a CBS link for f's device to peer, sending msgs, with short backoffs.
func cbsLink(t *testing.T, f *testpeer.Fixture, peer *testpeer.AMQPPeer, msgs <-chan telemetry.Message) *amqplink.Link {
	t.Helper()
	return amqplink.New(amqplink.Options{
		Common: link.Common{Source: f.Keeper(t, ""), Messages: msgs, DialAddr: peer.Addr, RootCAs: f.CA.Pool(),
			Backoff: backoff.Policy{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
			Timeout: 5 * time.Second, Logger: discard()},
		Auth: amqplink.CBS,
	})
}
