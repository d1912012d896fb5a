package jwtbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer/jwtpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

var now = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)

// verify checks tok against the issuer's published keys (its JWKS over HTTP, as a
// broker does) and returns its claims.
func verify(t *testing.T, iss *testissuer.Issuer, tok, clientID, aud string) jwtpeer.Verified {
	t.Helper()
	v, err := jwtpeer.NewVerifier(t.Context(), jwtpeer.VerifyOptions{JWKSURL: iss.JWKSURL(), Issuer: iss.Issuer(), Audience: aud,
		ClientIDTemplate: "{deviceId}", Now: func() time.Time { return now.Add(time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	got, reason := v.Verify(t.Context(), tok, clientID)
	if reason != "" {
		t.Fatalf("broker refuses the token: %s", reason)
	}
	return got
}

func TestMint(t *testing.T) {
	iss := testissuer.Serve(t)
	const acl = `{"acl": {"pub": ["devices/{deviceId}/#"], "sub": ["commands/{deviceId}"]}, "n": 12345678901234567890}`
	tests := []struct {
		name     string
		hub      func(map[string]string) domain.Hub
		settings map[string]string
		// want* are for device "d-1".
		wantAlg, wantAud, wantAuthMethod, wantVersion, wantURL, wantUser string
		wantPort                                                         int
		wantExtra                                                        map[string]any
	}{
		{
			name: "Event Grid namespace",
			hub:  egHub,
			settings: map[string]string{"audience": `"` + egAudience + `"`, "authMethod": `"CUSTOM-JWT"`,
				"claims": `{"client_attributes": {"room": "r-{deviceId}"}}`},
			wantAlg: "RS256", wantAud: egAudience, wantAuthMethod: "CUSTOM-JWT", wantVersion: "5",
			wantURL: "mqtts://" + egHost + ":8883", wantUser: "d-1", wantPort: 8883,
			wantExtra: map[string]any{"client_attributes": map[string]any{"room": "r-d-1"}},
		},
		{
			name: "EMQX, ES256, password, acl claim",
			hub:  hub,
			settings: map[string]string{"mqttVersion": `"3.1.1"`, "port": "8884",
				"usernameTemplate": `"user-{deviceId}"`, "claims": acl},
			wantAlg: "ES256", wantAud: host, wantVersion: "3.1.1",
			wantURL: "mqtts://" + host + ":8884", wantUser: "user-d-1", wantPort: 8884,
			wantExtra: map[string]any{
				"acl": map[string]any{"pub": []any{"devices/d-1/#"}, "sub": []any{"commands/d-1"}},
				"n":   json.Number("12345678901234567890"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := mustNormalize(t, tt.hub(tt.settings))
			h.CACert = "ca-pem"
			m, err := (jwtbroker.Kind{}).Mint(t.Context(), target.Signers{Issuer: iss}, h, target.Request{
				Device: domain.Device{ID: "d-1", Hub: "b1"}, TTL: time.Hour, Transport: signer.TCP, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			tok := m.Token.Value
			v := verify(t, iss, tok, "d-1", tt.wantAud)
			hdr, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
			if err != nil {
				t.Fatal(err)
			}
			if hdr.Header["alg"] != tt.wantAlg || hdr.Header["kid"] != iss.Current(tt.wantAlg) {
				t.Errorf("header: got %v, want alg %s and the current kid", hdr.Header, tt.wantAlg)
			}
			c := v.Claims
			if c["sub"] != "d-1" || c["iss"] != iss.Issuer() || c["aud"] != tt.wantAud {
				t.Errorf("sub/iss/aud: got %v %v %v", c["sub"], c["iss"], c["aud"])
			}
			if c["iat"] != float64(now.Unix()) || c["nbf"] != float64(now.Unix()) || c["exp"] != float64(now.Add(time.Hour).Unix()) {
				t.Errorf("iat/nbf/exp: got %v %v %v, want %d %d %d", c["iat"], c["nbf"], c["exp"], now.Unix(), now.Unix(), now.Add(time.Hour).Unix())
			}
			if jti, _ := c["jti"].(string); len(jti) < 16 {
				t.Errorf("jti: got %q, want a random one", jti)
			}
			for k, want := range tt.wantExtra {
				got := c[k]
				if n, ok := want.(json.Number); ok {
					// The verifier reads numbers as float64; compare the token's text.
					if !containsNumber(t, tok, k, string(n)) {
						t.Errorf("claim %s: want the number %s exactly", k, n)
					}
					continue
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("claim %s: got %#v, want %#v", k, got, want)
				}
			}

			wantTok := signer.Token{Value: tok, Resource: tt.wantAud, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
			if m.Token != wantTok {
				t.Errorf("token: got %+v, want %+v", m.Token, wantTok)
			}
			if m.TLSServerName != h.Hostname || m.CACert != "ca-pem" || m.Signature != "" {
				t.Errorf("trust: got %q %q %q", m.TLSServerName, m.CACert, m.Signature)
			}
			p := m.Profiles.MQTT
			wantPassword := tok
			if tt.wantAuthMethod != "" {
				wantPassword = ""
			}
			want := signer.MQTT{Host: h.Hostname, Port: tt.wantPort, Transport: signer.TCP, URL: tt.wantURL, ClientID: "d-1",
				Username: tt.wantUser, Password: wantPassword, ProtocolVersion: tt.wantVersion, AuthMethod: tt.wantAuthMethod,
				Topics: signer.MQTTTopics{Publish: "devices/d-1/telemetry", Subscribe: []string{}}}
			if p == nil || !reflect.DeepEqual(*p, want) {
				t.Errorf("mqtt profile:\n got %+v\nwant %+v", p, want)
			}
			if m.Profiles.AMQP != nil || m.Profiles.HTTPS != nil || m.Profiles.ConnectionString != "" {
				t.Errorf("profiles: got %+v, want MQTT only", m.Profiles)
			}
		})
	}
}

// containsNumber reports whether the token's payload has claim k as the JSON number n.
func containsNumber(t *testing.T, tok, k, n string) bool {
	t.Helper()
	b, err := jwt.NewParser().DecodeSegment(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return string(m[k]) == n
}

func TestMintTopicsAndTemplates(t *testing.T) {
	iss := testissuer.Serve(t)
	h := mustNormalize(t, hub(map[string]string{
		"clientIdTemplate": `"fleet-{deviceId}"`, "topicTemplate": `"t/{deviceId}/up"`,
		"subscribeTemplates": `["t/{deviceId}/down/#", "broadcast/+"]`,
		// A member name that expands to a registered claim never overrides it.
		"claims": `{"{deviceId}": "spoof"}`,
	}))
	m, err := (jwtbroker.Kind{}).Mint(t.Context(), target.Signers{Issuer: iss}, h, target.Request{
		Device: domain.Device{ID: "exp"}, TTL: time.Hour, Transport: signer.TCP, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	p := m.Profiles.MQTT
	if p.ClientID != "fleet-exp" || p.Topics.Publish != "t/exp/up" ||
		!reflect.DeepEqual(p.Topics.Subscribe, []string{"t/exp/down/#", "broadcast/+"}) {
		t.Errorf("profile: got client %q, topics %+v", p.ClientID, p.Topics)
	}
	v, err := jwtpeer.NewVerifier(t.Context(), jwtpeer.VerifyOptions{JWKSURL: iss.JWKSURL(), Issuer: iss.Issuer(), Audience: host,
		ClientIDTemplate: "fleet-{deviceId}", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	got, reason := v.Verify(t.Context(), m.Token.Value, "fleet-exp")
	if reason != "" {
		t.Fatalf("broker refuses: %s", reason)
	}
	if !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("exp: got %v, want %v (not the template's value)", got.ExpiresAt, now.Add(time.Hour))
	}
}

func TestMintRefuses(t *testing.T) {
	iss := testissuer.Serve(t)
	h := mustNormalize(t, hub(nil))
	tests := []struct {
		name    string
		s       target.Signers
		r       target.Request
		wantErr error
	}{
		{"a module", target.Signers{Issuer: iss}, target.Request{Device: domain.Device{ID: "d1"}, ModuleID: "m", TTL: time.Hour, Now: now}, target.ErrForbidden},
		{"WebSocket", target.Signers{Issuer: iss}, target.Request{Device: domain.Device{ID: "d1"}, TTL: time.Hour, Transport: signer.WebSocket, Now: now}, domain.ErrInvalid},
		{"no issuer keys", target.Signers{}, target.Request{Device: domain.Device{ID: "d1"}, TTL: time.Hour, Now: now}, jwtbroker.ErrNoIssuer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (jwtbroker.Kind{}).Mint(context.Background(), tt.s, h, tt.r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// BenchmarkMint mints ES256 credentials with an in-memory key (the test issuer's; the
// service's key ring adds its own bookkeeping).
func BenchmarkMint(b *testing.B) {
	iss := testissuer.Serve(b)
	h := mustNormalize(b, hub(map[string]string{"authMethod": `"CUSTOM-JWT"`,
		"claims": `{"acl": {"pub": ["devices/{deviceId}/#"]}}`}))
	r := target.Request{Device: domain.Device{ID: "d1"}, TTL: time.Hour, Transport: signer.TCP, Now: now}
	s := target.Signers{Issuer: iss}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (jwtbroker.Kind{}).Mint(context.Background(), s, h, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMintWithRing mints with the service's own key ring (in-memory keys over the
// embedded store): the whole per-token cost of a jwtbroker credential, per algorithm.
func BenchmarkMintWithRing(b *testing.B) {
	st, err := filestore.Open(filepath.Join(b.TempDir(), "ring.db"), make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ring, err := issuerkeys.New(st, issuerkeys.Local(), issuerkeys.Config{Issuer: "https://tokens.example.com"},
		issuerkeys.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	for _, alg := range []string{"ES256", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			h := mustNormalize(b, hub(map[string]string{"algorithm": `"` + alg + `"`, "authMethod": `"CUSTOM-JWT"`,
				"claims": `{"acl": {"pub": ["devices/{deviceId}/#"]}}`}))
			r := target.Request{Device: domain.Device{ID: "d1"}, TTL: time.Hour, Transport: signer.TCP, Now: now}
			s := target.Signers{Issuer: ring}
			if _, err := (jwtbroker.Kind{}).Mint(b.Context(), s, h, r); err != nil { // creates the key
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (jwtbroker.Kind{}).Mint(b.Context(), s, h, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
