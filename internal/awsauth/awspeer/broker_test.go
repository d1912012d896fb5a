package awspeer_test

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/awsauth/awspeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

const (
	endpoint = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"
	issuer   = "https://tokensvc.example.com"
	device   = "sensor-0001"
)

// world is an issuer publishing its keys over HTTP, an awsiot hub, the authorizer
// (fetching the JWKS) and the AWS stand-in calling it.
type world struct {
	iss    *testissuer.Issuer
	hub    domain.Hub
	broker *awspeer.Broker
	roots  *x509.CertPool
}

func newWorld(t *testing.T, signing bool) *world {
	t.Helper()
	iss := testissuer.New(t, issuer)
	jwks := httptest.NewServer(iss)
	t.Cleanup(jwks.Close)
	h := awspeer.Hub(t, endpoint, signing)
	cfg := awsauth.Config{Issuer: issuer, Endpoint: endpoint, JWKSURL: jwks.URL + "/.well-known/jwks.json",
		TokenKeyName: "token", Region: "eu-west-1", AccountID: "123456789012",
		TopicTemplate: awsiot.DefaultTopicTemplate, SubscribeTemplates: []string{"commands/{deviceId}/#"},
		Leeway: time.Second, MinSeconds: 1}
	keys, err := awsauth.NewKeySource(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := awsauth.New(cfg, keys, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ca := testca.NewCA(t, "Amazon Root CA stand-in")
	o := awspeer.Options{
		Cert: ca.Issue(t, testca.Spec{CommonName: endpoint, Hosts: []string{endpoint}}).TLS(), Authorizer: auth.Handle,
		AuthorizerName: "tokensvc", TokenKeyName: "token", Region: "eu-west-1", AccountID: "123456789012", MinSeconds: 1,
	}
	if signing {
		o.SigningKeys = []*rsa.PublicKey{iss.Public(iss.Current("RS256")).(*rsa.PublicKey)}
	}
	return &world{iss: iss, hub: h, broker: awspeer.Start(t, o), roots: testca.Pool(ca)}
}

func (w *world) mint(t *testing.T, id string, at time.Time, ttl time.Duration) *signer.MQTT {
	t.Helper()
	m, err := awsiot.Kind{}.Mint(context.Background(), target.Signers{Issuer: w.iss}, w.hub,
		target.Request{Device: domain.Device{ID: id}, TTL: ttl, Now: at, Transport: signer.TCP})
	if err != nil {
		t.Fatal(err)
	}
	return m.Profiles.MQTT
}

type client struct {
	cl   paho.Client
	lost chan error
	got  chan paho.Message
}

// connect connects with profile p (ALPN as given, not the profile's, so tests can
// leave it out) and returns the CONNECT's error.
func (w *world) connect(t *testing.T, p *signer.MQTT, alpn []string) (*client, error) {
	t.Helper()
	return dial(t, w.broker.Addr, w.roots, p.Host, p.ClientID, p.Username, p.Password, alpn)
}

// dial connects an MQTT 3.1.1 client to the stand-in at addr, verifying host.
func dial(t *testing.T, addr string, roots *x509.CertPool, host, clientID, user, pass string, alpn []string) (*client, error) {
	t.Helper()
	c := &client{lost: make(chan error, 1), got: make(chan paho.Message, 8)}
	conf := &tls.Config{RootCAs: roots, ServerName: host, NextProtos: alpn, MinVersion: tls.VersionTLS12}
	opts := paho.NewClientOptions().AddBroker("mqtts://" + host + ":443").SetClientID(clientID).SetUsername(user).
		SetPassword(pass).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.lost <- err }).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.got <- m }).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			return (&tls.Dialer{Config: conf}).Dial("tcp", addr)
		})
	c.cl = paho.NewClient(opts)
	tok := c.cl.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("CONNECT timed out")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.cl.Disconnect(0) })
	}
	return c, tok.Error()
}

func (c *client) publish(t *testing.T, topic string) error {
	t.Helper()
	tok := c.cl.Publish(topic, 1, false, []byte(`{"t":1}`))
	select {
	case <-tok.Done():
		return tok.Error()
	case err := <-c.lost:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no PUBACK and no disconnection")
		return nil
	}
}

func TestDevicePublishesToItsTopic(t *testing.T) {
	w := newWorld(t, true)
	p := w.mint(t, device, time.Now(), time.Hour)
	c, err := w.connect(t, p, p.ALPN)
	if err != nil {
		t.Fatalf("CONNECT: %v (stats %+v)", err, w.broker.Stats())
	}
	if err := c.publish(t, p.Topics.Publish); err != nil {
		t.Fatal(err)
	}
	pubs := w.broker.Published()
	if len(pubs) != 1 || pubs[0].Topic != "devices/sensor-0001/telemetry" || pubs[0].ClientID != device {
		t.Fatalf("published: %+v", pubs)
	}
	st := w.broker.Stats()
	ev := st.Events[0]
	// The event as AWS IoT Core documents it for MQTT.
	if !slices.Equal(ev.Protocols, []string{"tls", "mqtt"}) || ev.ProtocolData.TLS.ServerName != endpoint ||
		!ev.SignatureVerified || ev.Token == "" || ev.ProtocolData.MQTT.ClientID != device ||
		!strings.HasPrefix(ev.ProtocolData.MQTT.Username, device+"?x-amz-customauthorizer-name=tokensvc&token=") ||
		ev.ProtocolData.MQTT.Password != "" || ev.ConnectionMetadata.ID == "" {
		t.Errorf("event: %+v", ev)
	}
	if r := st.Responses[0]; r.PrincipalID == "" || r.DisconnectAfterInSeconds < 3590 || r.DisconnectAfterInSeconds > 3600 {
		t.Errorf("response: %+v", r)
	}
}

func TestPolicyConfinesTheDevice(t *testing.T) {
	w := newWorld(t, true)
	p := w.mint(t, device, time.Now(), time.Hour)
	c, err := w.connect(t, p, p.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	// Its own command filter: granted, and deliveries arrive.
	st := c.cl.Subscribe("commands/sensor-0001/#", 1, nil)
	if !st.WaitTimeout(5*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe to its own commands: %v", st.Error())
	}
	if codes := st.(*paho.SubscribeToken).Result(); codes["commands/sensor-0001/#"] != 1 {
		t.Fatalf("SUBACK %v, want QoS 1 granted", codes)
	}
	// Another device's: refused with SUBACK 0x80.
	st = c.cl.Subscribe("commands/sensor-0002/#", 1, nil)
	if !st.WaitTimeout(5*time.Second) || st.(*paho.SubscribeToken).Result()["commands/sensor-0002/#"] != 0x80 {
		t.Fatalf("subscribe to another device's commands: %v", st.(*paho.SubscribeToken).Result())
	}
	if err := w.broker.Send("commands/sensor-0001/reboot", []byte("1")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-c.got:
		if m.Topic() != "commands/sensor-0001/reboot" {
			t.Fatalf("got %q", m.Topic())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("its own command did not arrive")
	}
	// Publishing to another device's topic: AWS IoT Core disconnects an MQTT 3.1.1
	// client for an unauthorized publish; nothing is accepted.
	if err := c.publish(t, "devices/sensor-0002/telemetry"); err == nil {
		t.Fatal("a publish to another device's topic was acknowledged")
	}
	for _, m := range w.broker.Published() {
		if m.Topic == "devices/sensor-0002/telemetry" {
			t.Fatal("the broker accepted a publish to another device's topic")
		}
	}
	if d := w.broker.Stats().Denied; d != 2 {
		t.Errorf("denied: got %d, want 2 (one subscription, one publish)", d)
	}
}

func TestRefusals(t *testing.T) {
	w := newWorld(t, true)
	now := time.Now()
	good := func() *signer.MQTT { return w.mint(t, device, now, time.Hour) }
	rotatedOut := func() *signer.MQTT {
		// A key rotated out: a token it signed while it was current, then the key is
		// unpublished and a new one signs. The stand-in still holds the old signing
		// key (AWS keeps both during a rotation), so the authorizer is what refuses.
		old := w.iss.Current("RS256")
		p := good()
		w.broker.AddSigningKey(w.iss.Public(w.iss.Rotate(t, "RS256")).(*rsa.PublicKey))
		w.iss.Unpublish(old)
		// A token of the new key connects, and makes the authorizer fetch the key set
		// again, which no longer holds the old key.
		newer := good()
		if _, err := w.connect(t, newer, []string{"mqtt"}); err != nil {
			t.Fatalf("a token of the rotated-in key: %v", err)
		}
		return p
	}
	tests := []struct {
		name    string
		profile func() *signer.MQTT
		alpn    []string
		reason  string
	}{
		{"no ALPN", good, nil, awspeer.RefusedALPN},
		{"the certificate endpoint's ALPN", good, []string{"x-amzn-mqtt-ca"}, awspeer.RefusedALPN},
		{"tampered token", func() *signer.MQTT {
			p := good()
			p.Username = strings.Replace(p.Username, "&token=ey", "&token=ez", 1)
			return p
		}, []string{"mqtt"}, awspeer.RefusedSignature},
		{"no signature", func() *signer.MQTT {
			p := good()
			p.Username, _, _ = strings.Cut(p.Username, "&x-amz-customauthorizer-signature=")
			return p
		}, []string{"mqtt"}, awspeer.RefusedSignature},
		{"other authorizer", func() *signer.MQTT {
			p := good()
			p.Username = strings.Replace(p.Username, "name=tokensvc", "name=other", 1)
			return p
		}, []string{"mqtt"}, awspeer.RefusedAuthorizer},
		{"expired", func() *signer.MQTT { return w.mint(t, device, now.Add(-2*time.Hour), time.Hour) }, []string{"mqtt"}, awspeer.RefusedLambda},
		{"other device's token", func() *signer.MQTT {
			p := w.mint(t, "sensor-0002", now, time.Hour)
			p.ClientID = device
			return p
		}, []string{"mqtt"}, awspeer.RefusedLambda},
		{"rotated out", rotatedOut, []string{"mqtt"}, awspeer.RefusedLambda},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.profile()
			before := w.broker.Stats().Refused[tt.reason]
			if _, err := w.connect(t, p, tt.alpn); err == nil {
				t.Fatal("connected")
			}
			// The client may see the TLS alert before the broker has counted it.
			deadline := time.Now().Add(5 * time.Second)
			for w.broker.Stats().Refused[tt.reason] == before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := w.broker.Stats().Refused[tt.reason]; got != before+1 {
				t.Fatalf("refusals for %q: got %d, want %d (%+v)", tt.reason, got, before+1, w.broker.Stats().Refused)
			}
		})
	}
}

func TestUnsignedAuthorizerTakesThePassword(t *testing.T) {
	w := newWorld(t, false)
	p := w.mint(t, device, time.Now(), time.Hour)
	c, err := w.connect(t, p, p.ALPN)
	if err != nil {
		t.Fatalf("CONNECT: %v (%+v)", err, w.broker.Stats().Refused)
	}
	if err := c.publish(t, p.Topics.Publish); err != nil {
		t.Fatal(err)
	}
	ev := w.broker.Stats().Events[0]
	if ev.SignatureVerified || ev.Token != "" || ev.ProtocolData.MQTT.Password == "" {
		t.Errorf("event: %+v", ev)
	}
	// A token in the password of another device's CONNECT is refused.
	other := w.mint(t, "sensor-0002", time.Now(), time.Hour)
	other.ClientID = device
	if _, err := w.connect(t, other, other.ALPN); err == nil {
		t.Fatal("another device's token connected")
	}
}

func TestDisconnectsWhenTheTokenExpires(t *testing.T) {
	w := newWorld(t, true)
	p := w.mint(t, device, time.Now(), 3*time.Second)
	c, err := w.connect(t, p, p.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	if r := w.broker.Stats().Responses[0]; r.DisconnectAfterInSeconds < 1 || r.DisconnectAfterInSeconds > 3 {
		t.Fatalf("disconnectAfterInSeconds %d, want the token's remaining 1-3 s", r.DisconnectAfterInSeconds)
	}
	select {
	case <-c.lost:
	case <-time.After(15 * time.Second):
		t.Fatal("still connected after disconnectAfterInSeconds")
	}
	if d := w.broker.Stats().Dropped; d != 1 {
		t.Fatalf("dropped: got %d, want 1", d)
	}
}
