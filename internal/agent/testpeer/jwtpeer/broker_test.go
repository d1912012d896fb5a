package jwtpeer_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer/jwtpeer"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

const (
	host     = "broker.test"
	audience = "ns1.westeurope-1.ts.eventgrid.azure.net/"
	method   = "CUSTOM-JWT"
)

// fixture is a broker, the issuer it trusts and the pool that verifies the broker.
type fixture struct {
	iss  *testissuer.Issuer
	b    *jwtpeer.Broker
	pool *x509.CertPool
}

func start(t *testing.T, authMethod string) *fixture {
	t.Helper()
	ca := testca.NewCA(t, "jwtpeer test CA")
	leaf := ca.Issue(t, testca.Spec{CommonName: host, Hosts: []string{host, "127.0.0.1"}})
	iss := testissuer.Serve(t)
	b := jwtpeer.StartBroker(t, jwtpeer.BrokerOptions{
		VerifyOptions: jwtpeer.VerifyOptions{JWKSURL: iss.JWKSURL(), Issuer: iss.Issuer(), Audience: audience,
			RefreshInterval: 50 * time.Millisecond},
		Cert: leaf.TLS(), AuthMethod: authMethod,
	})
	return &fixture{iss: iss, b: b, pool: testca.Pool(ca)}
}

// claims returns valid claims for device id, changed by edit.
func (f *fixture) claims(id string, edit func(map[string]any)) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": f.iss.Issuer(), "sub": id, "aud": audience, "iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "jti": "j-" + id}
	if edit != nil {
		edit(c)
	}
	return c
}

func (f *fixture) token(t *testing.T, alg, id string, edit func(map[string]any)) string {
	t.Helper()
	tok, _, err := f.iss.SignJWT(t.Context(), alg, f.claims(id, edit))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// connect opens an MQTT 5 session as clientID presenting tok as the password, or as
// the authentication data when authMethod is set.
func (f *fixture) connect(t *testing.T, clientID, authMethod, tok string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", f.b.Addr, &tls.Config{RootCAs: f.pool, ServerName: host})
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn), AuthHandler: noAuther{},
		OnClientError: func(error) {}, OnServerDisconnect: func(*paho.Disconnect) {}})
	cp := &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30, Username: clientID, UsernameFlag: true}
	if authMethod != "" {
		cp.Properties = &paho.ConnectProperties{AuthMethod: authMethod, AuthData: []byte(tok)}
	} else {
		cp.Password, cp.PasswordFlag = []byte(tok), true
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

type noAuther struct{}

func (noAuther) Authenticate(a *paho.Auth) *paho.Auth { return a }
func (noAuther) Authenticated()                       {}

func publish(t *testing.T, c *paho.Client, topic string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("21.5")})
	return err
}

// TestBrokerVerifiesTokens connects with good and bad tokens, by password and by
// enhanced authentication: only the good ones get in, for the reason the broker names.
func TestBrokerVerifiesTokens(t *testing.T) {
	for _, authMethod := range []string{"", method} {
		name := "password"
		if authMethod != "" {
			name = authMethod
		}
		t.Run(name, func(t *testing.T) {
			f := start(t, authMethod)
			foreign := testissuer.Serve(t)
			old := f.iss.Current("ES256")
			tests := []struct {
				name       string
				clientID   string
				token      func() string
				wantReason string
			}{
				{"valid ES256", "d1", func() string { return f.token(t, "ES256", "d1", nil) }, ""},
				{"valid RS256", "d1", func() string { return f.token(t, "RS256", "d1", nil) }, ""},
				{"tampered", "d1", func() string {
					// A valid token whose payload is swapped for one living longer.
					parts := strings.Split(f.token(t, "ES256", "d1", nil), ".")
					b, _ := json.Marshal(f.claims("d1", func(c map[string]any) { c["exp"] = time.Now().Add(24 * time.Hour).Unix() }))
					parts[1] = base64.RawURLEncoding.EncodeToString(b)
					return strings.Join(parts, ".")
				}, jwtpeer.RefusedSignature},
				{"expired", "d1", func() string {
					return f.token(t, "ES256", "d1", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })
				}, jwtpeer.RefusedExpired},
				{"other device", "d2", func() string { return f.token(t, "ES256", "d1", nil) }, jwtpeer.RefusedClientID},
				{"wrong audience", "d1", func() string {
					return f.token(t, "ES256", "d1", func(c map[string]any) { c["aud"] = "other.example" })
				}, jwtpeer.RefusedAudience},
				{"wrong issuer", "d1", func() string {
					return f.token(t, "ES256", "d1", func(c map[string]any) { c["iss"] = "https://evil.example" })
				}, jwtpeer.RefusedIssuer},
				{"unknown kid", "d1", func() string {
					tok, _, err := foreign.SignJWT(t.Context(), "ES256", f.claims("d1", nil))
					if err != nil {
						t.Fatal(err)
					}
					return tok
				}, jwtpeer.RefusedUnknownKey},
				{"rotated out", "d1", func() string {
					f.iss.Rotate(t, "ES256")
					f.iss.Unpublish(old)
					// Two fetches after the change: the first one has then been applied.
					for n := f.iss.Fetches() + 2; f.iss.Fetches() < n; {
						time.Sleep(10 * time.Millisecond)
					}
					tok, err := f.iss.SignWith(old, nil, f.claims("d1", nil))
					if err != nil {
						t.Fatal(err)
					}
					return tok
				}, jwtpeer.RefusedUnknownKey},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					before := f.b.Stats()
					c, ca, err := f.connect(t, tt.clientID, authMethod, tt.token())
					after := f.b.Stats()
					if tt.wantReason != "" {
						if err == nil {
							t.Fatalf("connect: got accepted, want refused (%s)", tt.wantReason)
						}
						if got := after.Refused[tt.wantReason] - before.Refused[tt.wantReason]; got != 1 {
							t.Errorf("refusals for %q: got %d, want 1 (stats %+v)", tt.wantReason, got, after)
						}
						if ca != nil && ca.ReasonCode != 0x86 {
							t.Errorf("CONNACK reason: got %#x, want 0x86", ca.ReasonCode)
						}
						return
					}
					if err != nil {
						t.Fatalf("connect: %v (stats %+v)", err, after)
					}
					if authMethod != "" && (ca.Properties == nil || ca.Properties.AuthMethod != authMethod) {
						t.Errorf("CONNACK auth method: got %+v, want %s", ca.Properties, authMethod)
					}
					if err := publish(t, c, "devices/d1/telemetry"); err != nil {
						t.Fatalf("publish: %v", err)
					}
				})
			}
		})
	}
}

// TestBrokerRefusesTheWrongWayIn: a password broker refuses enhanced authentication
// and an enhanced-authentication broker refuses a password.
func TestBrokerRefusesTheWrongWayIn(t *testing.T) {
	for _, tt := range []struct{ broker, client string }{{"", method}, {method, ""}, {method, "SCRAM-SHA-1"}} {
		t.Run(tt.broker+"/"+tt.client, func(t *testing.T) {
			f := start(t, tt.broker)
			if _, _, err := f.connect(t, "d1", tt.client, f.token(t, "ES256", "d1", nil)); err == nil {
				t.Fatal("connect: got accepted, want refused")
			}
			if got := f.b.Stats().Refused[jwtpeer.RefusedMethod]; got != 1 {
				t.Errorf("refusals for the method: got %d, want 1", got)
			}
		})
	}
}

// TestBrokerMQTT311 accepts a token as the MQTT 3.1.1 password and refuses a bad one.
func TestBrokerMQTT311(t *testing.T) {
	f := start(t, "")
	dial := func(tok string) (paho3.Client, error) {
		o := paho3.NewClientOptions().AddBroker("ssl://" + f.b.Addr).SetClientID("d1").SetUsername("d1").SetPassword(tok).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
			SetTLSConfig(&tls.Config{RootCAs: f.pool, ServerName: host})
		c := paho3.NewClient(o)
		tk := c.Connect()
		if !tk.WaitTimeout(10 * time.Second) {
			return nil, errors.New("connect timed out")
		}
		return c, tk.Error()
	}
	if _, err := dial(f.token(t, "ES256", "d2", nil)); err == nil {
		t.Error("another device's token: got accepted, want refused")
	}
	c, err := dial(f.token(t, "RS256", "d1", nil))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Disconnect(0)
	if tk := c.Publish("devices/d1/telemetry", 1, false, "x"); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("publish: %v", tk.Error())
	}
	if got := len(f.b.Published()); got != 1 {
		t.Errorf("published: got %d, want 1", got)
	}
}

// TestBrokerEnforcesACLClaim lets a device publish and subscribe only where its acl
// claim allows.
func TestBrokerEnforcesACLClaim(t *testing.T) {
	f := start(t, method)
	tok := f.token(t, "ES256", "d1", func(c map[string]any) {
		c["acl"] = map[string]any{"pub": []string{"devices/d1/#"}, "sub": []string{"commands/d1/+"}}
	})
	c, _, err := f.connect(t, "d1", method, tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := publish(t, c, "devices/d1/telemetry"); err != nil {
		t.Errorf("publish to its own topic: %v", err)
	}
	if err := publish(t, c, "devices/d2/telemetry"); err == nil {
		t.Error("publish to another device's topic: got accepted, want refused")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "commands/d1/reboot", QoS: 1}, {Topic: "commands/#", QoS: 1}}})
	if sa == nil {
		t.Fatal(err) // a SUBACK with a refusal comes with an error too
	}
	if len(sa.Reasons) != 2 || sa.Reasons[0] >= 0x80 || sa.Reasons[1] < 0x80 {
		t.Errorf("SUBACK reasons: got %#v, want [granted, refused]", sa.Reasons)
	}
	if got := f.b.Stats().Denied; got != 2 {
		t.Errorf("denied: got %d, want 2", got)
	}
	if got := len(f.b.Published()); got != 1 {
		t.Errorf("published: got %d, want 1", got)
	}
}

// TestBrokerReauthentication: an AUTH (0x19) with a fresh token extends the session past
// the first token's expiry; one with another device's token ends it; a session whose
// token expires without re-authentication is dropped.
func TestBrokerReauthentication(t *testing.T) {
	f := start(t, method)
	short := func(id string) (string, time.Time) {
		exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
		return f.token(t, "ES256", id, func(c map[string]any) { c["exp"] = exp.Unix() }), exp
	}
	reauth := func(c *paho.Client, tok string) *paho.AuthResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		r, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: method, AuthData: []byte(tok)}})
		if err != nil {
			t.Fatalf("AUTH: %v", err)
		}
		return r
	}

	t.Run("renewed", func(t *testing.T) {
		t.Parallel()
		tok, exp := short("d1")
		c, _, err := f.connect(t, "d1", method, tok)
		if err != nil {
			t.Fatal(err)
		}
		if r := reauth(c, f.token(t, "ES256", "d1", nil)); !r.Success || r.ReasonCode != 0 {
			t.Fatalf("re-authentication: got %+v, want success", r)
		}
		time.Sleep(time.Until(exp.Add(500 * time.Millisecond))) // past the first token's expiry
		if err := publish(t, c, "devices/d1/telemetry"); err != nil {
			t.Fatalf("publish after the first token expired: %v", err)
		}
		if r := reauth(c, f.token(t, "ES256", "d9", nil)); r.Success || r.ReasonCode != 0x87 {
			t.Errorf("re-authentication as another device: got %+v, want a DISCONNECT 0x87", r)
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Error("session still open after a refused re-authentication")
		}
	})
	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		tok, _ := short("d2")
		c, _, err := f.connect(t, "d2", method, tok)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("session still open 10 s after its token expired")
		}
	})
	t.Cleanup(func() {
		s := f.b.Stats()
		if s.ReAuths != 1 || s.ExpiredDrops != 1 || s.Refused[jwtpeer.RefusedClientID] != 1 {
			t.Errorf("stats: got %+v, want 1 re-authentication, 1 expiry drop, 1 client-id refusal", s)
		}
	})
}

// TestBrokerRequiresALPN refuses a TLS client that negotiates none of its protocols.
func TestBrokerRequiresALPN(t *testing.T) {
	ca := testca.NewCA(t, "jwtpeer test CA")
	leaf := ca.Issue(t, testca.Spec{CommonName: host, Hosts: []string{host}})
	iss := testissuer.Serve(t)
	b := jwtpeer.StartBroker(t, jwtpeer.BrokerOptions{
		VerifyOptions: jwtpeer.VerifyOptions{JWKSURL: iss.JWKSURL(), Issuer: iss.Issuer(), Audience: audience},
		Cert:          leaf.TLS(), ALPN: []string{"mqtt"},
	})
	for _, tt := range []struct {
		alpn   []string
		wantOK bool
	}{{nil, false}, {[]string{"mqtt"}, true}} {
		c, err := tls.Dial("tcp", b.Addr, &tls.Config{RootCAs: testca.Pool(ca), ServerName: host, NextProtos: tt.alpn})
		if err == nil {
			// TLS 1.3: the server's verdict arrives with the first read.
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, err = c.Read(make([]byte, 1))
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				err = nil
			}
			c.Close()
		}
		if got := err == nil; got != tt.wantOK {
			t.Errorf("ALPN %v: got handshake error %v, want ok %v", tt.alpn, err, tt.wantOK)
		}
	}
	if got := b.Stats().NoALPN; got != 1 {
		t.Errorf("NoALPN: got %d, want 1", got)
	}
}
