package gateway_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/gateway"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// TestMQTTUpstreamEndToEnd: upstream over MQTT, one connection per leaf, each with its
// own client ID, user name and SAS token (the IoT-Hub-checking mochi peer verifies them
// and lets a client publish only to its own topic). A plain-MQTT leaf and a UDP leaf
// reach the hub as themselves across token rotations (5-second tokens), and a C2D
// message for the MQTT leaf comes back to its local topic.
func TestMQTTUpstreamEndToEnd(t *testing.T) {
	leaves := []string{"rs485-01", "rs485-02"}
	f := testpeer.NewGatewayFixture(t, "edge-mqtt", leaves, 5*time.Second)
	hub := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS, Keys: f.LeafKeys})
	r := startGateway(t, f, t.TempDir(), 1000, gateway.Options{
		Upstream: gateway.MQTT, DialAddr: hub.TLSAddr, MQTTAddr: "127.0.0.1:0", UDPAddr: "127.0.0.1:0",
	})
	mq, err := connectLeaf(t, r.gw.MQTTAddr(), "rs485-01", "")
	if err != nil {
		t.Fatal(err)
	}
	mq.subscribe(t, "devices/rs485-01/messages/devicebound/#")
	var n int
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); n++ {
		if !mq.publish("devices/rs485-01/messages/events/", fmt.Sprint("m-", n)) {
			t.Fatalf("leaf message %d not acknowledged", n)
		}
		sendLine(t, "udp", r.gw.UDPAddr(), fmt.Sprintf("rs485-02 u-%d", n))
		time.Sleep(250 * time.Millisecond)
	}
	testpeer.WaitFor(t, "every message at the hub", 20*time.Second, func() bool {
		got := map[string][]string{}
		for _, p := range hub.Published() {
			got[p.ClientID] = append(got[p.ClientID], string(p.Payload))
		}
		for i := range n {
			if !contains(got["rs485-01"], fmt.Sprint("m-", i)) || !contains(got["rs485-02"], fmt.Sprint("u-", i)) {
				return false
			}
		}
		return true
	})
	for _, p := range hub.Published() {
		if !strings.HasPrefix(p.Topic, "devices/"+p.ClientID+"/messages/events/") {
			t.Errorf("%s published on %s", p.ClientID, p.Topic)
		}
	}
	testpeer.WaitFor(t, "the leaf's subscription upstream", 5*time.Second, func() bool {
		return hub.C2D("rs485-01", []byte("reboot")) == nil && len(mq.received()) > 0
	})
	if got := mq.received()[0]; !strings.HasPrefix(got, "devices/rs485-01/messages/devicebound/") || !strings.HasSuffix(got, " reboot") {
		t.Errorf("C2D at the leaf: got %q", got)
	}
	s := hub.Stats()
	if len(s.Refused) != 0 || s.Denied != 0 || s.ExpiredDrops != 0 {
		t.Errorf("hub: %+v, want nothing refused, denied or expired", s)
	}
	if s.Accepted < 2*len(leaves) {
		t.Errorf("hub connections: got %d, want rotations for each leaf", s.Accepted)
	}
	r.stop(t)
	noSecretsIn(t, r.logs.String(), hub.Tokens())
	t.Logf("hub %+v; gateway %+v", s, r.gw.Stats())
}

// TestMQTTUpstreamKeepsC2DForAnAbsentLeaf: over MQTT upstream every leaf has its own
// connection to the hub and receives its C2D messages there, whether or not the leaf is
// connected to the local broker. A message for a leaf that is not (subscribed) locally
// must not be acknowledged to the hub — it would be lost — but stay there, to be sent
// again (IoT Hub: on a later connection) and reach the leaf once it is back.
func TestMQTTUpstreamKeepsC2DForAnAbsentLeaf(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-c2d", []string{"rs485-01"}, 5*time.Second)
	hub := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS, Keys: f.LeafKeys})
	r := startGateway(t, f, t.TempDir(), 1000, gateway.Options{
		Upstream: gateway.MQTT, DialAddr: hub.TLSAddr, MQTTAddr: "127.0.0.1:0",
	})
	testpeer.WaitFor(t, "the leaf's upstream connection", 10*time.Second, func() bool { return r.gw.Stats().Links.Connects > 0 })
	if err := hub.C2D("rs485-01", []byte("while-away")); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, "the message at the gateway", 10*time.Second, func() bool { return r.gw.Stats().MQTT.Undelivered > 0 })
	mq, err := connectLeaf(t, r.gw.MQTTAddr(), "rs485-01", "")
	if err != nil {
		t.Fatal(err)
	}
	mq.subscribe(t, "devices/rs485-01/messages/devicebound/#")
	testpeer.WaitFor(t, "the kept message at the leaf", 20*time.Second, func() bool {
		for _, m := range mq.received() {
			if strings.HasSuffix(m, " while-away") {
				return true
			}
		}
		return false
	})
	testpeer.WaitFor(t, "the hub's message acknowledged", 10*time.Second, func() bool { return hub.C2DPending("rs485-01") == 0 })
	r.stop(t)
}
