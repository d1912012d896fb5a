package mqttlink_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/awsauth/awspeer"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestLinkAWSIoTCustomAuth runs the link unchanged against the AWS IoT Core stand-in:
// tokensvc mints 10-second awsiot tokens (renewed at 8 s: the 2 s margin keeps a loaded
// CI machine from turning a late reconnect into a drop), the stand-in refuses clients without ALPN
// "mqtt", calls the authorizer (which verifies the token against tokensvc's JWKS) and
// drops each connection when its token's lifetime is over. Every message must arrive
// across token rotations, with no refusal and no drop.
func TestLinkAWSIoTCustomAuth(t *testing.T) {
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) { testLinkAWSIoT(t, transport) })
	}
}

func testLinkAWSIoT(t *testing.T, transport string) {
	f := awspeer.NewFixture(t, awspeer.FixtureOptions{DeviceID: "aws-sensor", TTL: 10 * time.Second,
		SubscribeTemplates: []string{"commands/{deviceId}/#"}})
	k := f.Keeper(t, transport)
	addr := f.Broker.Addr
	if transport == "ws" {
		addr = f.Broker.WSAddr
	}
	msgs := make(chan telemetry.Message)
	c2d := make(chan mqttlink.Delivery, 1)
	link := newTestLink(k, msgs, addr, testca.Pool(f.CA), c2d)
	stop := testpeer.Run(t, link.Run)

	const wantRotations = 2
	sent := testpeer.SendUntil(t, msgs, func() bool { return link.Stats().Rotations >= wantRotations },
		func() string {
			return fmt.Sprintf("%+v, want %d rotations; stand-in %+v", link.Stats(), wantRotations, f.Broker.Stats().Refused)
		})
	// A command sent while the link is between two connections (a rotation every
	// ~7.5 s) finds no subscriber and is dropped, as AWS IoT drops it for a clean
	// session: send it again every 2 s until one arrives (c2d buffers the one that may
	// still be on its way).
	deadline := time.After(10 * time.Second)
	resend := time.NewTicker(2 * time.Second)
	defer resend.Stop()
	for got := false; !got; {
		if err := f.Broker.Send("commands/aws-sensor/reboot", []byte("hello device")); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-c2d:
			got = true
			if string(d.Payload) != "hello device" || d.Topic != "commands/aws-sensor/reboot" {
				t.Errorf("command: got %s %q", d.Topic, d.Payload)
			}
		case <-resend.C:
		case <-deadline:
			t.Fatal("no command within 10 s")
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}

	seen := map[string]bool{}
	for _, p := range f.Broker.Published() {
		if p.Topic != "devices/aws-sensor/telemetry" {
			t.Fatalf("published to %q: AWS topics carry no IoT Hub property bag", p.Topic)
		}
		seen[string(p.Payload)] = true
	}
	for i := range sent {
		if !seen["m"+strconv.Itoa(i)] {
			t.Errorf("message m%d never reached the stand-in", i)
		}
	}
	st := f.Broker.Stats()
	if len(st.Refused) != 0 || st.Denied != 0 || st.Dropped != 0 {
		t.Errorf("stand-in: refused %v, denied %d, dropped %d; want none", st.Refused, st.Denied, st.Dropped)
	}
	if st.Accepted < wantRotations+1 {
		t.Errorf("accepted %d connections, want ≥ %d", st.Accepted, wantRotations+1)
	}
	if want := map[string]int{"tcp": 2, "ws": 3}[transport]; len(st.Events[0].Protocols) != want {
		t.Errorf("authorizer event protocols %v for %s", st.Events[0].Protocols, transport)
	}
	t.Logf("%s: sent %d messages; link %+v; stand-in accepted %d", transport, sent, link.Stats(), st.Accepted)
}
