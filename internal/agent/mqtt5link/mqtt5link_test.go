package mqtt5link_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqtt5link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer/jwtpeer"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

const (
	host     = "broker.test"
	deviceID = "sensor-1"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// source is a token source for the link: tokens the jwtbroker kind mints for a hub,
// signed by a test issuer, shaped as GET /token returns them. Next replaces the token
// at once, as the keeper does at a token's refresh point.
type source struct {
	t   *testing.T
	iss *testissuer.Issuer
	hub domain.Hub
	ttl time.Duration
	// alpn, when set, is put in the profiles (jwtbroker profiles carry none).
	alpn []string

	token.Holder
	mu          sync.Mutex
	invalidated int
}

func (s *source) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidated++
}

func (s *source) Invalidated() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.invalidated
}

// Next mints a token and makes it current; it returns its expiry.
func (s *source) Next() time.Time {
	s.t.Helper()
	now := time.Now()
	m, err := (jwtbroker.Kind{}).Mint(context.Background(), target.Signers{Issuer: s.iss}, s.hub,
		target.Request{Device: domain.Device{ID: deviceID, Hub: s.hub.Name}, TTL: s.ttl, Transport: signer.TCP, Now: now})
	if err != nil {
		s.t.Fatal(err)
	}
	p := m.Profiles.MQTT
	mp := &oapi.MqttProfile{Host: p.Host, Port: p.Port, Transport: oapi.MqttProfileTransport(p.Transport), Url: p.URL,
		ClientId: p.ClientID, Username: p.Username, Password: p.Password, ProtocolVersion: p.ProtocolVersion,
		Topics: oapi.MqttTopics{Publish: p.Topics.Publish, Subscribe: p.Topics.Subscribe},
		Tls:    &oapi.TlsSettings{ServerName: m.TLSServerName}}
	if p.AuthMethod != "" {
		mp.AuthMethod = &p.AuthMethod
	}
	if s.alpn != nil {
		mp.Alpn = &s.alpn
	}
	life := m.Token.ExpiresAt.Sub(now)
	s.Set(token.Token{RequestedAt: now, Response: oapi.TokenResponse{Token: m.Token.Value, Resource: m.Token.Resource,
		ServerTime: now, ExpiresAt: m.Token.ExpiresAt, RefreshAfter: now.Add(life * 8 / 10),
		ExpiresIn: int(life / time.Second), Hub: s.hub.Name, Kind: oapi.HubKind(jwtbroker.Name), Mqtt: mp}})
	return m.Token.ExpiresAt
}

// fixture is a broker, the issuer it trusts, and a token source for a jwtbroker hub
// with settings.
type fixture struct {
	b    *jwtpeer.Broker
	src  *source
	pool *x509.CertPool
}

func start(t *testing.T, settings map[string]string, authMethod string, alpn []string) *fixture {
	t.Helper()
	ca := testca.NewCA(t, "mqtt5link test CA")
	leaf := ca.Issue(t, testca.Spec{CommonName: host, Hosts: []string{host}})
	iss := testissuer.Serve(t)
	hub := domain.Hub{Name: "broker", Kind: jwtbroker.Name, Hostname: host, Settings: settings}
	if err := (jwtbroker.Kind{}).Normalize(&hub); err != nil {
		t.Fatal(err)
	}
	aud := host
	if a, ok := settings["audience"]; ok {
		aud = a[1 : len(a)-1]
	}
	b := jwtpeer.StartBroker(t, jwtpeer.BrokerOptions{
		VerifyOptions: jwtpeer.VerifyOptions{JWKSURL: iss.JWKSURL(), Issuer: iss.Issuer(), Audience: aud,
			RefreshInterval: 50 * time.Millisecond},
		Cert: leaf.TLS(), AuthMethod: authMethod, ALPN: alpn,
	})
	return &fixture{b: b, pool: testca.Pool(ca), src: &source{t: t, iss: iss, hub: hub, ttl: 3 * time.Second, alpn: alpn}}
}

func (f *fixture) link(msgs <-chan telemetry.Message, fallback mqtt5link.Fallback) *mqtt5link.Link {
	return mqtt5link.New(mqtt5link.Options{
		Common: link.Common{Source: f.src, Messages: msgs, DialAddr: f.b.Addr, RootCAs: f.pool,
			Properties: map[string]string{"content-type": "text/plain"},
			Backoff:    backoff.Policy{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
			Timeout:    5 * time.Second, Logger: discard()},
		Fallback: fallback,
		QoS:      1,
	})
}

// drive sends numbered messages and calls next every interval, until until() holds or
// 30 s pass; it returns how many messages it sent.
func drive(t *testing.T, msgs chan<- telemetry.Message, interval time.Duration, next func(), until func() bool) int {
	t.Helper()
	sent := 0
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !until() {
		select {
		case msgs <- telemetry.Message{Body: []byte("m" + strconv.Itoa(sent)), Properties: map[string]string{"seq": strconv.Itoa(sent)}}:
			sent++
			time.Sleep(50 * time.Millisecond)
		case <-tick.C:
			next()
		case <-deadline:
			t.Fatal("not done after 30 s")
		}
	}
	return sent
}

// checkAllArrived fails unless each of the sent messages reached the broker, with
// its user properties when props (MQTT 5).
func checkAllArrived(t *testing.T, b *jwtpeer.Broker, sent int, props bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range b.Published() {
		seen[string(p.Payload)] = true
		if p.ClientID != deviceID {
			t.Errorf("message from client %q, want %q", p.ClientID, deviceID)
		}
		if !props {
			continue
		}
		if ct := p.Properties["content-type"]; ct != "text/plain" {
			t.Errorf("message %s: user property content-type %q, want text/plain", p.Payload, ct)
		}
		if seq := p.Properties["seq"]; "m"+seq != string(p.Payload) {
			t.Errorf("message %s: user property seq %q", p.Payload, seq)
		}
	}
	for i := range sent {
		if !seen["m"+strconv.Itoa(i)] {
			t.Errorf("message m%d never reached the broker", i)
		}
	}
}

// TestLinkReauthenticatesOnTheOpenSession is the Event Grid flow: MQTT 5 with
// CUSTOM-JWT enhanced authentication and ALPN; every new token goes on the open
// session by AUTH 0x19, past the expiry of the first, with one CONNECT in all.
func TestLinkReauthenticatesOnTheOpenSession(t *testing.T) {
	f := start(t, map[string]string{"audience": `"ns1.westeurope-1.ts.eventgrid.azure.net/"`, "authMethod": `"CUSTOM-JWT"`,
		"claims": `{"acl": {"pub": ["devices/{deviceId}/#"]}}`}, "CUSTOM-JWT", []string{"mqtt"})
	firstExp := f.src.Next()
	msgs := make(chan telemetry.Message)
	l := f.link(msgs, nil)
	stop := testpeer.Run(t, l.Run)

	const wantReAuths = 3
	sent := drive(t, msgs, time.Second, func() { f.src.Next() }, func() bool {
		return l.Stats().ReAuths >= wantReAuths && time.Now().After(firstExp.Add(500*time.Millisecond))
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	checkAllArrived(t, f.b, sent, true)
	bs, ls := f.b.Stats(), l.Stats()
	t.Logf("sent %d; link %+v; broker %+v", sent, ls, bs)
	if bs.Accepted != 1 || ls.Connects != 1 || ls.Rotations != 0 || ls.Lost != 0 {
		t.Errorf("connects: broker accepted %d, link connected %d, rotated %d, lost %d; want 1, 1, 0, 0",
			bs.Accepted, ls.Connects, ls.Rotations, ls.Lost)
	}
	if bs.ReAuths != ls.ReAuths || ls.ReAuths < wantReAuths {
		t.Errorf("re-authentications: broker %d, link %d; want equal and ≥ %d", bs.ReAuths, ls.ReAuths, wantReAuths)
	}
	if len(bs.Refused) != 0 || bs.ExpiredDrops != 0 || bs.Denied != 0 || bs.NoALPN != 0 {
		t.Errorf("broker: got %+v, want no refusals, expiry drops, denials or ALPN failures", bs)
	}
	if ls.Published < sent {
		t.Errorf("published: got %d, want ≥ %d", ls.Published, sent)
	}
}

// TestLinkReconnectsWithoutAuthMethod: with the token as the MQTT 5 password, a new
// token means a clean reconnect with it, before the old one expires.
func TestLinkReconnectsWithoutAuthMethod(t *testing.T) {
	f := start(t, map[string]string{"mqttVersion": `"5"`}, "", nil)
	f.src.Next()
	msgs := make(chan telemetry.Message)
	l := f.link(msgs, nil)
	stop := testpeer.Run(t, l.Run)
	sent := drive(t, msgs, time.Second, func() { f.src.Next() }, func() bool {
		s := l.Stats()
		return s.Rotations >= 2 && s.Connects > s.Rotations // reconnected after the last rotation
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkAllArrived(t, f.b, sent, true)
	bs, ls := f.b.Stats(), l.Stats()
	if ls.Connects != ls.Rotations+1 || bs.Accepted != ls.Connects || ls.ReAuths != 0 || bs.ReAuths != 0 {
		t.Errorf("link %+v, broker %+v: want one connect per token and no re-authentication", ls, bs)
	}
	if len(bs.Refused) != 0 || bs.ExpiredDrops != 0 {
		t.Errorf("broker: got %+v, want no refusals or expiry drops", bs)
	}
}

// TestLinkFallsBackToMQTT311 hands a 3.1.1 profile to the fallback link, which presents
// the token as the password.
func TestLinkFallsBackToMQTT311(t *testing.T) {
	f := start(t, map[string]string{"mqttVersion": `"3.1.1"`}, "", nil)
	f.src.Next()
	msgs := make(chan telemetry.Message, 1)
	v311 := mqttlink.New(mqttlink.Options{Common: link.Common{Source: f.src, DialAddr: f.b.Addr,
		RootCAs: f.pool, Timeout: 5 * time.Second, Logger: discard()}})
	l := f.link(msgs, v311)
	stop := testpeer.Run(t, l.Run)
	msgs <- telemetry.Message{Body: []byte("m0")}
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().Published < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkAllArrived(t, f.b, 1, false)
	if s := l.Stats(); s.Connects != 1 || s.Published != 1 {
		t.Errorf("link: got %+v, want 1 connect and 1 message published", s)
	}
}

// TestLinkRefusedReauthentication: a new token the broker cannot verify (its key is
// no longer published) is refused on the open session; the link reports the refusal
// to its source and reconnects.
func TestLinkRefusedReauthentication(t *testing.T) {
	f := start(t, map[string]string{"authMethod": `"CUSTOM-JWT"`}, "CUSTOM-JWT", nil)
	f.src.Next()
	l := f.link(nil, nil)
	stop := testpeer.Run(t, l.Run)
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().Connects < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	f.src.iss.Unpublish(f.src.iss.Current("ES256"))
	for n := f.src.iss.Fetches() + 2; f.src.iss.Fetches() < n; {
		time.Sleep(10 * time.Millisecond) // the broker has dropped the key
	}
	f.src.Next()
	for f.src.Invalidated() < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ls, bs := l.Stats(), f.b.Stats()
	if ls.Refused < 1 || ls.Lost < 1 || bs.Refused[jwtpeer.RefusedUnknownKey] < 1 || f.src.Invalidated() < 1 {
		t.Errorf("link %+v, broker %+v, invalidated %d: want the re-authentication refused and reported",
			ls, bs, f.src.Invalidated())
	}
}

// TestLinkDropsRefusedMessages: a message the broker refuses by PUBACK reason (here
// the acl claim) is dropped and counted; the session goes on.
func TestLinkDropsRefusedMessages(t *testing.T) {
	f := start(t, map[string]string{"claims": `{"acl": {"pub": ["devices/{deviceId}/allowed"]}}`}, "", nil)
	f.src.Next()
	msgs := make(chan telemetry.Message)
	l := f.link(msgs, nil)
	stop := testpeer.Run(t, l.Run)
	sendN(t, msgs, 2)
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().Rejected < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ls, bs := l.Stats(), f.b.Stats()
	if ls.Rejected != 2 || ls.Published != 0 || ls.Connects != 1 || ls.Lost != 0 || bs.Denied != 2 {
		t.Errorf("link %+v, broker %+v: want both messages refused and dropped on one session", ls, bs)
	}
}

// TestLinkKeepsThrottledMessages: a PUBACK with 0x97 (quota exceeded, Event Grid's
// throttling) refuses a message for now, not for what it is: the link keeps it and
// sends it again after its backoff, in order, instead of dropping it.
func TestLinkKeepsThrottledMessages(t *testing.T) {
	f := start(t, nil, "", nil)
	f.src.Next()
	f.b.Throttle(2)
	msgs := make(chan telemetry.Message)
	l := f.link(msgs, nil)
	stop := testpeer.Run(t, l.Run)
	sendN(t, msgs, 2)
	testpeer.WaitFor(t, "both messages published", 30*time.Second, func() bool { return l.Stats().Published >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range f.b.Published() {
		got = append(got, string(p.Payload))
	}
	ls, bs := l.Stats(), f.b.Stats()
	if fmt.Sprint(got) != "[m0 m1]" || ls.Rejected != 0 || bs.Throttled != 2 {
		t.Errorf("published %v, link %+v, broker %+v: want [m0 m1] after two throttled tries, none dropped", got, ls, bs)
	}
}

func TestProperties(t *testing.T) {
	tests := []struct {
		name      string
		base, msg map[string]string
		want      paho.UserProperties
	}{
		{"none", nil, nil, nil},
		{"sorted, message wins", map[string]string{"b": "1", "a": "x"}, map[string]string{"a": "y"},
			paho.UserProperties{{Key: "a", Value: "y"}, {Key: "b", Value: "1"}}},
		{"message only", nil, map[string]string{"k": "v"}, paho.UserProperties{{Key: "k", Value: "v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mqtt5link.Properties(tt.base, tt.msg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// sendN hands the link messages m0…m{n-1}, failing if it takes one no message for 30 s.
func sendN(t *testing.T, msgs chan<- telemetry.Message, n int) {
	t.Helper()
	for i := range n {
		select {
		case msgs <- telemetry.Message{Body: []byte("m" + strconv.Itoa(i))}:
		case <-time.After(30 * time.Second):
			t.Fatal("the link took no message within 30 s")
		}
	}
}
