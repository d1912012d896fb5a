package certpeer_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer/certpeer"
	"github.com/tokensvc/tokensvc/internal/testca"
)

const (
	host = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"
	alpn = "x-amzn-mqtt-ca"
)

type world struct {
	hubCA  *testca.Cert
	roots  *x509.CertPool // what devices trust for the broker
	broker *certpeer.Broker
}

func newWorld(t *testing.T) *world {
	t.Helper()
	server := testca.NewCA(t, "Amazon Root CA stand-in")
	hubCA := testca.NewCA(t, "hub CA")
	b := certpeer.Start(t, certpeer.Options{
		Cert:  server.Issue(t, testca.Spec{CommonName: host, Hosts: []string{host}}).TLS(),
		Roots: testca.Pool(hubCA), ALPN: []string{alpn},
	})
	return &world{hubCA: hubCA, roots: testca.Pool(server), broker: b}
}

// connect opens an MQTT connection as clientID presenting certs (none when empty) and
// offering protos.
func (w *world) connect(t *testing.T, clientID string, certs []tls.Certificate, protos []string) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tls://" + w.broker.Addr).SetClientID(clientID).
		SetTLSConfig(&tls.Config{RootCAs: w.roots, ServerName: host, Certificates: certs, NextProtos: protos}).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func wait(t *testing.T, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("timed out")
	}
}

func TestAcceptsOwnTopicsOnly(t *testing.T) {
	w := newWorld(t)
	dev := w.hubCA.Issue(t, testca.Spec{CommonName: "sensor-1"})
	c, err := w.connect(t, "sensor-1", []tls.Certificate{dev.TLS()}, []string{alpn})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.Publish("devices/sensor-1/telemetry", 1, false, "own 1"))
	wait(t, c.Subscribe("devices/sensor-2/#", 1, nil))
	wait(t, c.Subscribe("devices/sensor-1/commands/#", 1, nil))
	// QoS 0: dropped; a denied QoS 1 publish ends an MQTT 3.1.1 connection.
	wait(t, c.Publish("devices/sensor-2/telemetry", 0, false, "foreign"))
	wait(t, c.Publish("devices/sensor-1/telemetry", 1, false, "own 2"))
	var got []string
	for _, p := range w.broker.Published() {
		got = append(got, p.ClientID+" "+p.Topic+" "+string(p.Payload))
	}
	want := []string{"sensor-1 devices/sensor-1/telemetry own 1", "sensor-1 devices/sensor-1/telemetry own 2"}
	if !slices.Equal(got, want) {
		t.Fatalf("published %q, want %q", got, want)
	}
	s := w.broker.Stats()
	if s.Accepted != 1 || s.Denied != 2 {
		t.Fatalf("accepted %d denied %d, want 1 and 2", s.Accepted, s.Denied)
	}
	sess := w.broker.Sessions()
	if len(sess) != 1 || sess[0].ClientID != "sensor-1" || sess[0].Serial != dev.Cert.SerialNumber.Text(16) {
		t.Fatalf("sessions %+v", sess)
	}
}

func TestAcceptsChainThroughIntermediate(t *testing.T) {
	w := newWorld(t)
	inter := w.hubCA.Issue(t, testca.Spec{CommonName: "issuing CA", CA: true})
	dev := inter.Issue(t, testca.Spec{CommonName: "sensor-1"})
	if _, err := w.connect(t, "sensor-1", []tls.Certificate{dev.TLS(inter)}, []string{alpn}); err != nil {
		t.Fatal(err)
	}
}

func TestRefusals(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	good := w.hubCA.Issue(t, testca.Spec{CommonName: "sensor-1"})
	foreign := testca.NewCA(t, "someone else's CA").Issue(t, testca.Spec{CommonName: "sensor-1"})
	tests := []struct {
		name     string
		clientID string
		cert     *testca.Cert
		protos   []string
		want     string
	}{
		{"expired", "sensor-1", w.hubCA.Issue(t, testca.Spec{CommonName: "sensor-1",
			NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Minute)}), []string{alpn}, certpeer.RefusedExpired},
		{"not yet valid", "sensor-1", w.hubCA.Issue(t, testca.Spec{CommonName: "sensor-1",
			NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}), []string{alpn}, certpeer.RefusedExpired},
		{"foreign CA", "sensor-1", foreign, []string{alpn}, certpeer.RefusedUnknownCA},
		{"self-signed", "sensor-1", testca.SelfSigned(t, testca.Spec{CommonName: "sensor-1"}), []string{alpn}, certpeer.RefusedUnknownCA},
		{"server certificate", "sensor-1", w.hubCA.Issue(t, testca.Spec{CommonName: "sensor-1",
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), []string{alpn}, certpeer.RefusedInvalid},
		{"no client certificate", "sensor-1", nil, []string{alpn}, certpeer.RefusedNoCert},
		{"no ALPN", "sensor-1", good, nil, certpeer.RefusedALPN},
		{"custom-auth ALPN", "sensor-1", good, []string{"mqtt"}, certpeer.RefusedHandshake},
		{"client id of another device", "sensor-2", good, []string{alpn}, certpeer.RefusedClientID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := w.broker.Stats()
			var certs []tls.Certificate
			if tc.cert != nil {
				certs = []tls.Certificate{tc.cert.TLS()}
			}
			if _, err := w.connect(t, tc.clientID, certs, tc.protos); err == nil {
				t.Fatal("connected, want refused")
			}
			after := w.broker.Await(t, func(s certpeer.Stats) bool { return s.Refused[tc.want] > before.Refused[tc.want] })
			if after.Refused[tc.want] != before.Refused[tc.want]+1 || after.Accepted != before.Accepted {
				t.Fatalf("refused %v (accepted %d), want one more %q than %v and none accepted", after.Refused, after.Accepted, tc.want, before.Refused)
			}
		})
	}
	if s := w.broker.Sessions(); len(s) != 0 {
		t.Fatalf("sessions %+v, want none", s)
	}
}
