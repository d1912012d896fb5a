package awsiot_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

const endpoint = "a1b2c3-ats.iot.us-east-1.amazonaws.com"

func hub(settings map[string]string) domain.Hub {
	s := map[string]string{"authorizerName": `"tokensvc-auth"`, "tokenKeyName": `"token"`}
	for k, v := range settings {
		if v == "" {
			delete(s, k)
			continue
		}
		s[k] = v
	}
	return domain.Hub{Name: "aws", Kind: awsiot.KindName, Hostname: endpoint, Settings: s}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name      string
		hub       func() domain.Hub
		wantField string // "" for success
	}{
		{"defaults", func() domain.Hub { return hub(nil) }, ""},
		{"signing off, subscribe filters", func() domain.Hub {
			return hub(map[string]string{"signing": "false", "subscribeTemplates": `["commands/{deviceId}/#","x/+/{deviceId}"]`})
		}, ""},
		{"no authorizer", func() domain.Hub { return hub(map[string]string{"authorizerName": ""}) }, "authorizerName"},
		{"bad authorizer name", func() domain.Hub { return hub(map[string]string{"authorizerName": `"a b"`}) }, "authorizerName"},
		{"no token key", func() domain.Hub { return hub(map[string]string{"tokenKeyName": ""}) }, "tokenKeyName"},
		{"reserved token key", func() domain.Hub {
			return hub(map[string]string{"tokenKeyName": `"X-Amz-CustomAuthorizer-Signature"`})
		}, "tokenKeyName"},
		{"signing not a boolean", func() domain.Hub { return hub(map[string]string{"signing": `"yes"`}) }, "signing"},
		{"unknown field", func() domain.Hub { return hub(map[string]string{"audience": `"x"`}) }, "audience"},
		{"topic without device", func() domain.Hub { return hub(map[string]string{"topicTemplate": `"telemetry"`}) }, "topicTemplate"},
		{"topic with wildcard", func() domain.Hub { return hub(map[string]string{"topicTemplate": `"d/{deviceId}/#"`}) }, "topicTemplate"},
		{"topic with policy wildcard", func() domain.Hub { return hub(map[string]string{"topicTemplate": `"d/{deviceId}*"`}) }, "topicTemplate"},
		{"topic with policy variable", func() domain.Hub {
			return hub(map[string]string{"topicTemplate": `"d/${iot:ClientId}/{deviceId}"`})
		}, "topicTemplate"},
		{"topic with other placeholder", func() domain.Hub { return hub(map[string]string{"topicTemplate": `"{hub}/{deviceId}"`}) }, "topicTemplate"},
		{"topic too deep", func() domain.Hub { return hub(map[string]string{"topicTemplate": `"a/b/c/d/e/f/g/h/{deviceId}"`}) }, "topicTemplate"},
		{"topic too long", func() domain.Hub {
			return hub(map[string]string{"topicTemplate": `"` + strings.Repeat("x", 130) + `/{deviceId}"`})
		}, "topicTemplate"},
		{"filter without device", func() domain.Hub { return hub(map[string]string{"subscribeTemplates": `["commands/#"]`}) }, "subscribeTemplates"},
		{"filter with # inside", func() domain.Hub {
			return hub(map[string]string{"subscribeTemplates": `["c/#/{deviceId}"]`})
		}, "subscribeTemplates"},
		{"filter with partial +", func() domain.Hub {
			return hub(map[string]string{"subscribeTemplates": `["c/{deviceId}+"]`})
		}, "subscribeTemplates"},
		{"policy mode", func() domain.Hub { h := hub(nil); h.Mode = domain.SignPolicy; return h }, "mode"},
		{"policy name", func() domain.Hub { h := hub(nil); h.PolicyName = "p"; return h }, "policyName"},
		{"policy key", func() domain.Hub { h := hub(nil); h.PolicyKey = "k"; return h }, "policyKey"},
		{"entity path", func() domain.Hub { h := hub(nil); h.EntityPath = "e"; return h }, "entityPath"},
		{"id scope", func() domain.Hub { h := hub(nil); h.IDScope = "0ne"; return h }, "idScope"},
		{"gateway", func() domain.Hub { h := hub(nil); h.GatewayHostName = "gw"; return h }, "gatewayHostName"},
		{"transit", func() domain.Hub { h := hub(nil); h.Transit = true; return h }, "transit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.hub()
			err := awsiot.Kind{}.Normalize(&h)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				if h.Mode != domain.SignCustomAuthorizer {
					t.Errorf("mode: got %q, want customAuthorizer", h.Mode)
				}
				if h.Settings["topicTemplate"] == "" || h.Settings["signing"] == "" {
					t.Errorf("defaults not stored: %v", h.Settings)
				}
				return
			}
			if !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			pe, ok := errors.AsType[*domain.PublicError](err)
			if !ok || !strings.Contains(pe.Public(), tt.wantField) {
				t.Fatalf("got %q, want a message naming %s", err, tt.wantField)
			}
		})
	}
}

func TestNormalizeStoresDefaults(t *testing.T) {
	h := hub(nil)
	if err := (awsiot.Kind{}).Normalize(&h); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"authorizerName": `"tokensvc-auth"`, "tokenKeyName": `"token"`, "signing": "true",
		"topicTemplate": `"devices/{deviceId}/telemetry"`}
	for k, v := range want {
		if h.Settings[k] != v {
			t.Errorf("%s: got %s, want %s", k, h.Settings[k], v)
		}
	}
	// Normalizing again changes nothing (stored hubs are normalized on every update).
	again := h.Clone()
	if err := (awsiot.Kind{}).Normalize(&again); err != nil || len(again.Settings) != len(h.Settings) {
		t.Fatalf("second normalize: %v, %v", err, again.Settings)
	}
}

func TestPrepareDevice(t *testing.T) {
	tests := []struct {
		name    string
		d       domain.Device
		wantErr bool
	}{
		{"plain", domain.Device{ID: "sensor-0001"}, false},
		{"punctuation AWS takes literally", domain.Device{ID: "a.b_c-d:e=f@g(h),i!j'k%l"}, false},
		{"keys", domain.Device{ID: "d", PrimaryKey: domain.NewKey()}, true},
		{"modules", domain.Device{ID: "d", Modules: []domain.Module{{ID: "m"}}}, true},
		{"policy wildcard *", domain.Device{ID: "d*"}, true},
		{"policy wildcard ?", domain.Device{ID: "d?"}, true},
		{"policy variable $", domain.Device{ID: "$d"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d
			err := awsiot.Kind{}.PrepareDevice(hub(nil), &d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if err == nil && (d.PrimaryKey != "" || d.SecondaryKey != "") {
				t.Fatal("keys were generated for an awsiot device")
			}
		})
	}
}

type minted struct {
	m      target.Minted
	iss    *testissuer.Issuer
	claims jwt.MapClaims
	kid    string
}

func mint(t *testing.T, settings map[string]string, tr signer.Transport) minted {
	t.Helper()
	h := hub(settings)
	if err := (awsiot.Kind{}).Normalize(&h); err != nil {
		t.Fatal(err)
	}
	iss := testissuer.New(t, "https://tokensvc.example.com")
	now := time.Now().Truncate(time.Second)
	m, err := awsiot.Kind{}.Mint(context.Background(), target.Signers{Issuer: iss}, h,
		target.Request{Device: domain.Device{ID: "sensor-0001", Hub: "aws"}, TTL: time.Hour, Transport: tr, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(m.Token.Value, claims, func(tok *jwt.Token) (any, error) {
		return iss.Public(tok.Header["kid"].(string)), nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer("https://tokensvc.example.com"),
		jwt.WithAudience(endpoint), jwt.WithSubject("sensor-0001"), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("the token does not verify: %v", err)
	}
	if exp, _ := claims.GetExpirationTime(); !exp.Time.Equal(now.Add(time.Hour)) || !m.Token.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("exp: got %v / %v, want %v", exp, m.Token.ExpiresAt, now.Add(time.Hour))
	}
	if claims["jti"] == "" || claims["jti"] == nil {
		t.Error("no jti")
	}
	return minted{m: m, iss: iss, claims: claims, kid: tok.Header["kid"].(string)}
}

func TestMintSigned(t *testing.T) {
	got := mint(t, nil, signer.TCP)
	m := got.m
	if m.Token.Resource != endpoint || m.TLSServerName != endpoint {
		t.Errorf("resource %q, server name %q, want %s", m.Token.Resource, m.TLSServerName, endpoint)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil {
		t.Fatalf("signature not base64: %v", err)
	}
	sum := sha256.Sum256([]byte(m.Token.Value))
	if err := rsa.VerifyPKCS1v15(got.iss.Public(got.kid).(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("the authorizer signature does not verify with the token's key: %v", err)
	}

	mq := m.Profiles.MQTT
	if mq.Host != endpoint || mq.Port != 443 || mq.URL != "mqtts://"+endpoint+":443" || !slices.Equal(mq.ALPN, []string{"mqtt"}) ||
		mq.ClientID != "sensor-0001" || mq.Password != "" || mq.ProtocolVersion != "3.1.1" {
		t.Errorf("mqtt profile: %+v", mq)
	}
	user, query, ok := strings.Cut(mq.Username, "?")
	if !ok || user != "sensor-0001" {
		t.Fatalf("user name %q: want sensor-0001?…", mq.Username)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("x-amz-customauthorizer-name") != "tokensvc-auth" || q.Get("token") != m.Token.Value ||
		q.Get("x-amz-customauthorizer-signature") != m.Signature {
		t.Errorf("user name query %v does not carry name, token and signature", q)
	}
	if strings.ContainsAny(strings.SplitN(query, "x-amz-customauthorizer-signature=", 2)[1], "+/=") {
		t.Errorf("signature not URL-encoded in %q", query)
	}
	if mq.Topics.Publish != "devices/sensor-0001/telemetry" || len(mq.Topics.Subscribe) != 0 {
		t.Errorf("topics: %+v", mq.Topics)
	}

	h := m.Profiles.HTTPS
	if h.URL != "https://"+endpoint+":443/topics/devices/sensor-0001/telemetry?qos=1" || h.Authorization != "" || h.ALPN != nil {
		t.Errorf("https profile: %+v", h)
	}
	want := map[string]string{"x-amz-customauthorizer-name": "tokensvc-auth", "token": m.Token.Value,
		"x-amz-customauthorizer-signature": m.Signature}
	if len(h.Headers) != len(want) {
		t.Errorf("https headers: got %v, want %v", h.Headers, want)
	}
	for k, v := range want {
		if h.Headers[k] != v {
			t.Errorf("https header %s: got %q, want %q", k, h.Headers[k], v)
		}
	}
	if m.Profiles.AMQP != nil || m.Profiles.ConnectionString != "" {
		t.Error("AWS IoT Core takes no AMQP and no Azure connection string")
	}
}

func TestMintUnsigned(t *testing.T) {
	m := mint(t, map[string]string{"signing": "false", "subscribeTemplates": `["commands/{deviceId}/#"]`}, signer.TCP).m
	if m.Signature != "" {
		t.Error("a signature without signing")
	}
	mq := m.Profiles.MQTT
	if mq.Username != "sensor-0001?x-amz-customauthorizer-name=tokensvc-auth" || mq.Password != m.Token.Value {
		t.Errorf("user name %q, password %q: want the token in the password", mq.Username, mq.Password)
	}
	if !slices.Equal(mq.Topics.Subscribe, []string{"commands/sensor-0001/#"}) {
		t.Errorf("subscribe: %v", mq.Topics.Subscribe)
	}
	if _, ok := m.Profiles.HTTPS.Headers["x-amz-customauthorizer-signature"]; ok {
		t.Error("https signature header without signing")
	}
}

func TestMintWebSocket(t *testing.T) {
	m := mint(t, nil, signer.WebSocket).m
	mq := m.Profiles.MQTT
	u, err := url.Parse(mq.URL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "wss" || u.Host != endpoint || u.Path != "/mqtt" || mq.Port != 443 || mq.ALPN != nil ||
		q.Get("x-amz-customauthorizer-name") != "tokensvc-auth" || q.Get("token") != m.Token.Value ||
		q.Get("x-amz-customauthorizer-signature") != m.Signature {
		t.Errorf("websocket profile %+v", mq)
	}
	if mq.Username != "" || mq.Password != "" {
		t.Errorf("websocket CONNECT carries credentials: %q %q", mq.Username, mq.Password)
	}
}

func TestMintRefuses(t *testing.T) {
	h := hub(nil)
	if err := (awsiot.Kind{}).Normalize(&h); err != nil {
		t.Fatal(err)
	}
	r := target.Request{Device: domain.Device{ID: "d"}, TTL: time.Hour, Now: time.Now()}
	if _, err := (awsiot.Kind{}).Mint(context.Background(), target.Signers{}, h, r); !errors.Is(err, awsiot.ErrNoIssuer) {
		t.Errorf("no issuer: got %v, want ErrNoIssuer", err)
	}
	iss := testissuer.New(t, "https://i")
	bad := h.Clone()
	bad.Settings["topicTemplate"] = `"no-device"`
	if _, err := (awsiot.Kind{}).Mint(context.Background(), target.Signers{Issuer: iss}, bad, r); err == nil || errors.Is(err, domain.ErrInvalid) {
		t.Errorf("broken stored hub: got %v, want an internal error (not the device's 400)", err)
	}
	r.ModuleID = "m"
	if _, err := (awsiot.Kind{}).Mint(context.Background(), target.Signers{Issuer: iss}, h, r); !errors.Is(err, target.ErrForbidden) {
		t.Errorf("module: got %v, want ErrForbidden", err)
	}
}

// BenchmarkMint is one awsiot credential with an in-memory RSA 2048 key: the RS256 JWT
// and, with signing, the authorizer signature — two RSA signatures per token.
func BenchmarkMint(b *testing.B) {
	for _, signing := range []string{"true", "false"} {
		b.Run("signing="+signing, func(b *testing.B) {
			h := hub(map[string]string{"signing": signing})
			if err := (awsiot.Kind{}).Normalize(&h); err != nil {
				b.Fatal(err)
			}
			s := target.Signers{Issuer: testissuer.New(b, "https://tokensvc.example.com")}
			r := target.Request{Device: domain.Device{ID: "sensor-0001"}, TTL: time.Hour, Now: time.Now()}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (awsiot.Kind{}).Mint(context.Background(), s, h, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestUsesIssuerKeys(t *testing.T) {
	// The registry refuses awsiot hubs on a service without an issuer URL.
	if !target.UsesIssuerKeys(awsiot.Kind{}) {
		t.Fatal("awsiot does not say it signs with the issuer keys")
	}
}
