package certificate_test

import (
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqtt5link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// kept is a keeper Store holding one token, as one saved before a reboot.
type kept struct{ t token.Token }

func (k *kept) Load() (token.Token, error) { return k.t, nil }
func (k *kept) Save(t token.Token) error   { k.t = t; return nil }

// TestRefusedCertificateIsReplaced: a certificate the broker refuses in the TLS
// handshake (the hub's CA was rotated and the broker no longer trusts the one that
// issued it; the certificate was revoked) is reported to the keeper like a refused
// token, so the device gets a new certificate now, not at the old one's refreshAfter
// minutes or days later while it stays offline.
// Both MQTT links tokenagent -link mqtt uses are covered: 3.1.1 (AWS IoT Core) and 5
// (a generic mutual-TLS broker).
func TestRefusedCertificateIsReplaced(t *testing.T) {
	for _, tc := range []struct {
		kind domain.HubKind
		alpn []string
	}{
		{awsiot.KindName, []string{awsiot.ALPNMQTTCert}},
		{jwtbroker.Name, nil},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			refusedCertificateIsReplaced(t, testpeer.NewCertFixtureKind(t, tc.kind, tc.alpn, "thing-0007", 5*time.Minute))
		})
	}
}

func refusedCertificateIsReplaced(t *testing.T, f *testpeer.CertFixture) {
	cf := f.Certificates(t, t.TempDir())
	good, err := cf.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The saved certificate: valid for minutes yet, issued by a CA the broker does not
	// trust (any more).
	bad := good
	c := *good.Certificate
	pair := testca.NewCA(t, "retired hub CA").Issue(t, testca.Spec{CommonName: f.DeviceID}).TLS()
	c.Pair, c.Serial = &pair, "retired"
	bad.Certificate, bad.RequestedAt = &c, time.Now()

	bo := backoff.Policy{Min: 200 * time.Millisecond, Max: time.Second}
	k := keeper.New(keeper.Options{Fetcher: cf, Store: &kept{bad}, Holder: &token.Holder{}, Key: cf.Key(), Backoff: bo})
	common := link.Common{Source: k, DialAddr: f.Broker.Addr, RootCAs: f.CA.Pool(), Backoff: bo}
	l := mqtt5link.New(mqtt5link.Options{Common: common, QoS: 1,
		Fallback: mqttlink.New(mqttlink.Options{Common: common, QoS: 1, CleanSession: true})})
	stopKeeper, stopLink := testpeer.Run(t, k.Run), testpeer.Run(t, l.Run)
	defer func() { _ = stopLink(); _ = stopKeeper() }()

	deadline := time.Now().Add(30 * time.Second)
	for len(f.Broker.Sessions()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	sess := f.Broker.Sessions()
	if len(sess) == 0 {
		t.Fatalf("no session within 30 s of the refusal; broker %+v, keeper %+v, link %+v", f.Broker.Stats(), k.Stats(), l.Stats())
	}
	if cur, _, _ := k.Current(); sess[0].Serial != cur.Certificate.Serial || cur.Certificate.Serial == "retired" {
		t.Errorf("session with serial %s, want the new certificate's %s", sess[0].Serial, cur.Certificate.Serial)
	}
	if bs := f.Broker.Stats(); len(bs.Refused) == 0 {
		t.Errorf("broker %+v: want the retired certificate refused first", bs)
	}
}
