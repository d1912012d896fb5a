package mqttlink_test

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/domain"
)

func TestPropertyBag(t *testing.T) {
	tests := []struct {
		name      string
		base, msg map[string]string
		want      string
	}{
		{"none", nil, nil, ""},
		{"system and app properties sorted", map[string]string{"$.ct": "application/json", "$.ce": "utf-8"}, map[string]string{"alert": "high temp"},
			"%24.ce=utf-8&%24.ct=application%2Fjson&alert=high%20temp"},
		{"message overrides base", map[string]string{"k": "a"}, map[string]string{"k": "b"}, "k=b"},
		{"reserved characters escaped", nil, map[string]string{"a&b": "c=d"}, "a%26b=c%3Dd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mqttlink.PropertyBag(tt.base, tt.msg); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestLinkKeepsPublishingAcrossTokenRotations runs a real tokensvc minting 4-second
// tokens and a broker that verifies them like IoT Hub and drops connections at expiry:
// every message must arrive, and no connection may be refused or dropped for expiry.
func TestLinkKeepsPublishingAcrossTokenRotations(t *testing.T) {
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			f := testpeer.NewFixture(t, "sensor-"+transport, 4*time.Second, domain.Hub{})
			broker := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS,
				Keys: map[string][]byte{f.DeviceID: f.Key}})
			k := f.Keeper(t, transport)
			addr := broker.TLSAddr
			if transport == "ws" {
				addr = broker.WSAddr
			}
			msgs := make(chan telemetry.Message)
			c2d := make(chan mqttlink.Delivery, 1)
			link := newTestLink(k, msgs, addr, f.CA.Pool(), c2d)
			stop := testpeer.Run(t, link.Run)

			const wantRotations = 3
			sent := testpeer.SendUntil(t, msgs, func() bool { return link.Stats().Rotations >= wantRotations },
				func() string { return fmt.Sprintf("%+v, want %d rotations", link.Stats(), wantRotations) })
			if err := broker.C2D(f.DeviceID, []byte("hello device")); err != nil {
				t.Fatal(err)
			}
			select {
			case d := <-c2d:
				if string(d.Payload) != "hello device" {
					t.Errorf("C2D payload: got %q, want %q", d.Payload, "hello device")
				}
			case <-time.After(10 * time.Second):
				t.Error("no C2D message within 10 s")
			}
			if err := stop(); err != nil {
				t.Fatalf("Run: got %v, want nil", err)
			}

			seen := map[string]bool{}
			for _, p := range broker.Published() {
				seen[string(p.Payload)] = true
				if got := p.Properties.Get("$.ct"); got != "text/plain" {
					t.Fatalf("message %s: $.ct got %q, want text/plain", p.Payload, got)
				}
			}
			for i := range sent {
				if !seen["m"+strconv.Itoa(i)] {
					t.Errorf("message m%d never reached the broker", i)
				}
			}
			bs := broker.Stats()
			if len(bs.Refused) != 0 || bs.ExpiredDrops != 0 || bs.Denied != 0 {
				t.Errorf("broker: got %+v, want no refusals, expiry drops or ACL denials", bs)
			}
			ls := link.Stats()
			t.Logf("%s: sent %d messages; link %+v; keeper %+v; broker %+v", transport, sent, ls, k.Stats(), bs)
			if ls.Published < sent {
				t.Errorf("published: got %d, want ≥ %d", ls.Published, sent)
			}
		})
	}
}

// newTestLink is the link the rotation tests run: telemetry from msgs with a content
// type, C2D into c2d, fast backoff, a short timeout, quiet logs.
func newTestLink(src link.TokenSource, msgs chan telemetry.Message, addr string, roots *x509.CertPool, c2d chan mqttlink.Delivery) *mqttlink.Link {
	return mqttlink.New(mqttlink.Options{
		Common: link.Common{Source: src, Messages: msgs, DialAddr: addr, RootCAs: roots,
			Properties: map[string]string{"$.ct": "text/plain"},
			Backoff:    backoff.Policy{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
			Timeout:    5 * time.Second, Logger: discard()},
		OnC2D: func(d mqttlink.Delivery) { c2d <- d },
	})
}

func TestSessionDefaults(t *testing.T) {
	tests := []struct {
		qos, wantQoS   byte
		keep, wantKeep time.Duration
	}{
		{qos: 0, wantQoS: 0, keep: 0, wantKeep: 60 * time.Second},
		{qos: 1, wantQoS: 1, keep: 30 * time.Second, wantKeep: 30 * time.Second},
		{qos: 2, wantQoS: 1, keep: time.Second, wantKeep: time.Second}, // IoT Hub has no QoS 2
	}
	for _, tt := range tests {
		if q, k := mqttlink.SessionDefaults(tt.qos, tt.keep); q != tt.wantQoS || k != tt.wantKeep {
			t.Errorf("SessionDefaults(%d, %v): got %d, %v, want %d, %v", tt.qos, tt.keep, q, k, tt.wantQoS, tt.wantKeep)
		}
	}
}

// TestBrokerCertificateCheckedAtVerifyTime: the broker's certificate is checked as of
// Common.VerifyTime (tokenagent passes the clock corrected by the token service's), not
// the system clock, over TLS and WebSocket alike: the same broker is refused when that
// time is 1970 (its certificate not yet valid) and accepted when it is now.
func TestBrokerCertificateCheckedAtVerifyTime(t *testing.T) {
	f := testpeer.NewFixture(t, "clockless-1", time.Hour, domain.Hub{})
	broker := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS,
		Keys: map[string][]byte{f.DeviceID: f.Key}})
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			k := f.Keeper(t, transport)
			tok, _, ok := token.AwaitValid(t.Context(), k.Current, time.Now, discard())
			if !ok {
				t.Fatal("no token")
			}
			addr := broker.TLSAddr
			if transport == "ws" {
				addr = broker.WSAddr
			}
			for _, tc := range []struct {
				name   string
				at     func() time.Time
				wantOK bool
			}{
				{"1970", func() time.Time { return time.Unix(0, 0) }, false},
				{"now", time.Now, true},
			} {
				l := mqttlink.New(mqttlink.Options{Common: link.Common{DialAddr: addr, RootCAs: f.CA.Pool(), VerifyTime: tc.at,
					Timeout: 5 * time.Second, Logger: discard()}})
				c, err := l.Dial(t.Context(), tok)
				if c != nil {
					c.Close(true)
				}
				if (err == nil) != tc.wantOK || (err != nil && !strings.Contains(err.Error(), "not yet valid")) {
					t.Errorf("broker certificate checked at %s: got %v, want ok %v", tc.name, err, tc.wantOK)
				}
			}
		})
	}
}
