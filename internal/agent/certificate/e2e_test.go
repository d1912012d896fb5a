package certificate_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqtt5link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
)

// TestRenewalsKeepTheLinkUp wires the agent's parts as tokenagent -certificate -link
// mqtt -cert-dir does — fetch client, certificate Fetcher, keeper, MQTT link, file sink
// — against the real service (an awsiot hub in mode certificate, 300-second
// certificates, the least the API allows) and the AWS IoT Core certificate stand-in.
// The keeper schedules each renewal from the certificate's refreshAfter (240 s) moved
// earlier by its early-refresh share, set here to 77 % of the lifetime with a fixed
// random draw, so renewals come about 9 s apart instead of 4 minutes. Across three
// certificates telemetry flows without a gap: every message arrives, each new
// certificate brings a reconnect with it, nothing is refused, the key is the same, and
// device.crt follows.
func TestRenewalsKeepTheLinkUp(t *testing.T) {
	if testing.Short() {
		t.Skip("about 25 s of real time")
	}
	f := testpeer.NewCertFixture(t, "thing-0002", 5*time.Minute)
	fc := f.Client(t)
	dir := t.TempDir()
	cf, err := certificate.New(certificate.Options{Client: fc, KeyFile: certificate.KeyFileIn(dir), DeviceID: f.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	store, err := persist.New(filepath.Join(dir, "certificate.json"))
	if err != nil {
		t.Fatal(err)
	}
	bo := backoff.Policy{Min: 200 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0.999 }}
	k := keeper.New(keeper.Options{Fetcher: cf, Store: cf.Saved(store), Holder: &token.Holder{}, Key: cf.Key(),
		Backoff: bo, EarlyRefresh: 0.77})
	msgs := make(chan telemetry.Message)
	l := mqttlink.New(mqttlink.Options{
		Common: link.Common{
			Source:   k,
			Messages: msgs,
			DialAddr: f.Broker.Addr,
			RootCAs:  f.CA.Pool(),
			Backoff:  bo,
		},
		QoS:          1,
		CleanSession: true,
	})
	sink := testpeer.CertDirSink(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{k.Run, l.Run, func(ctx context.Context) error { return sink.Run(ctx, k) }} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()

	// Telemetry the whole time; the link takes each message until the broker has it.
	sent := 0
	serials := map[string]bool{}
	for len(serials) < 3 {
		select {
		case msgs <- telemetry.Message{Body: []byte(`{"seq":` + strconv.Itoa(sent) + `}`)}:
			sent++
		case <-time.After(time.Minute):
			t.Fatalf("the link took no message for a minute; broker %+v", f.Broker.Stats())
		}
		time.Sleep(20 * time.Millisecond)
		for _, s := range f.Broker.Sessions() {
			serials[s.Serial] = true
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.Broker.Published()) < sent && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	seen := map[int]bool{}
	for _, p := range f.Broker.Published() {
		var m struct{ Seq int }
		if json.Unmarshal(p.Payload, &m) != nil || p.ClientID != f.DeviceID {
			t.Fatalf("unexpected message %s from %s", p.Payload, p.ClientID)
		}
		seen[m.Seq] = true
	}
	for i := range sent {
		if !seen[i] {
			t.Errorf("message %d never reached the broker", i)
		}
	}
	bs, ls, ks := f.Broker.Stats(), l.Stats(), k.Stats()
	if len(bs.Refused) != 0 || bs.Denied != 0 || ks.Failed != 0 || ks.Fetched < 3 || ls.Rotations < 2 {
		t.Errorf("broker %+v, keeper %+v, link %+v: want ≥ 3 certificates, ≥ 2 reconnects for them, no refusal or failure", bs, ks, ls)
	}
	// The sink writes each certificate just after the keeper holds it.
	cur, _, _ := k.Current()
	var fileSerial string
	for deadline := time.Now().Add(10 * time.Second); fileSerial != cur.Certificate.Serial && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certificate.ChainFile), certificate.KeyFileIn(dir))
		if err != nil {
			t.Fatalf("device.crt and device.key: %v", err)
		}
		fileSerial = pair.Leaf.SerialNumber.Text(16)
	}
	if fileSerial != cur.Certificate.Serial {
		t.Errorf("device.crt: serial %s, want the current certificate's %s", fileSerial, cur.Certificate.Serial)
	}
	t.Logf("%d messages over %d certificates; keeper %+v; link %+v; broker %+v", sent, len(serials), ks, ls, bs)
}

// TestEveryKindConnectsWithItsCertificate: for each kind with a certificate mode, the
// device's certificate from the real service and the kind's profile get it through the
// stand-in (which requires the profile's ALPN, if any, and takes the identity from the
// certificate) over the link tokenagent -link mqtt uses: the MQTT 5 link, falling back
// to MQTT 3.1.1 for the profiles that say so. jwtbroker hubs (a generic mutual-TLS
// broker, an Event Grid namespace) default to MQTT 5, the others to 3.1.1.
func TestEveryKindConnectsWithItsCertificate(t *testing.T) {
	tests := []struct {
		kind    domain.HubKind
		alpn    []string
		version string
	}{
		{awsiot.KindName, []string{awsiot.ALPNMQTTCert}, "3.1.1"},
		{domain.KindIoTHub, nil, "3.1.1"},
		{jwtbroker.Name, nil, "5"},
	}
	for _, tc := range tests {
		t.Run(string(tc.kind), func(t *testing.T) {
			f := testpeer.NewCertFixtureKind(t, tc.kind, tc.alpn, "thing-0005", 5*time.Minute)
			cf := f.Certificates(t, t.TempDir())
			tok, err := cf.Fetch(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if p := tok.Response.Mqtt; p == nil || p.ProtocolVersion != tc.version || p.Password != "" {
				t.Fatalf("profile %+v, want MQTT %s without password", p, tc.version)
			}
			mustPublishWith(t, f, cf, tok)
		})
	}
}

// mustPublishWith connects to f's stand-in with tok over the link tokenagent -link mqtt
// uses (MQTT 5, falling back to 3.1.1), publishes 3 messages and checks the stand-in
// got them over one session with tok's certificate and refused nothing.
func mustPublishWith(t *testing.T, f *testpeer.CertFixture, cf *certificate.Fetcher, tok token.Token) {
	t.Helper()
	h := &token.Holder{}
	h.Set(tok)
	k := keeper.New(keeper.Options{Fetcher: cf, Holder: h, Key: cf.Key()})
	msgs := make(chan telemetry.Message, 3)
	common := link.Common{Source: k, Messages: msgs, DialAddr: f.Broker.Addr, RootCAs: f.CA.Pool()}
	l := mqtt5link.New(mqtt5link.Options{
		Common:   common,
		QoS:      1,
		Fallback: mqttlink.New(mqttlink.Options{Common: common, QoS: 1, CleanSession: true}),
	})
	stop := testpeer.Run(t, l.Run)
	for i := range 3 {
		msgs <- telemetry.Message{Body: []byte(`{"seq":` + strconv.Itoa(i) + `}`)}
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(f.Broker.Published()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	pubs, sess := f.Broker.Published(), f.Broker.Sessions()
	if len(pubs) != 3 || len(sess) != 1 || sess[0].ClientID != f.DeviceID || sess[0].Serial != tok.Certificate.Serial ||
		len(f.Broker.Stats().Refused) != 0 {
		t.Fatalf("stand-in: messages %+v, sessions %+v, %+v; want 3 messages over one session with the certificate",
			pubs, sess, f.Broker.Stats())
	}
}
