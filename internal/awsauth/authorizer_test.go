package awsauth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/awsauth/awspeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

const (
	issuerURL = "https://tokensvc.example.com"
	endpoint  = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"
	device    = "sensor-0001"
	account   = "123456789012"
)

var t0 = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)

// fixture is an issuer, an awsiot hub and an authorizer that trusts the issuer's keys.
type fixture struct {
	iss  *testissuer.Issuer
	hub  domain.Hub
	cfg  awsauth.Config
	auth *awsauth.Authorizer
	logs *bytes.Buffer
	now  time.Time
}

func pemKeys(iss *testissuer.Issuer, kids ...string) string {
	var b strings.Builder
	for _, kid := range kids {
		// A kid header in each PEM block, as TOKENSVC_ISSUER_KEYS wants them.
		b.WriteString(strings.Replace(iss.PublicPEM(kid), "-----\n", "-----\nkid: "+kid+"\n\n", 1))
	}
	return b.String()
}

func newFixture(t *testing.T, signing bool) *fixture {
	t.Helper()
	iss := testissuer.New(t, issuerURL)
	h := awspeer.Hub(t, endpoint, signing)
	f := &fixture{iss: iss, hub: h, logs: &bytes.Buffer{}, now: t0}
	f.cfg = awsauth.Config{
		Issuer: issuerURL, Endpoint: endpoint, Keys: pemKeys(iss, iss.Current("RS256"), iss.Current("ES256")),
		TokenKeyName: "token", Region: "eu-west-1", AccountID: account,
		TopicTemplate: awsiot.DefaultTopicTemplate, SubscribeTemplates: []string{"commands/{deviceId}/#"},
		Leeway: 30 * time.Second,
	}
	f.auth = f.newAuthorizer(t, f.cfg)
	return f
}

func (f *fixture) newAuthorizer(t *testing.T, c awsauth.Config) *awsauth.Authorizer {
	t.Helper()
	keys, err := awsauth.NewKeySource(t.Context(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := awsauth.New(c, keys, func() time.Time { return f.now },
		slog.New(slog.NewJSONHandler(f.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// mint returns a credential for id as tokensvc mints it, at time at, living ttl.
func (f *fixture) mint(t *testing.T, id string, at time.Time, ttl time.Duration, tr signer.Transport) target.Minted {
	t.Helper()
	m, err := awsiot.Kind{}.Mint(context.Background(), target.Signers{Issuer: f.iss}, f.hub,
		target.Request{Device: domain.Device{ID: id}, TTL: ttl, Now: at, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Event shapes AWS IoT Core documents for each protocol, built from a minted profile.

func mqttEvent(m target.Minted, signed bool) awsauth.Request {
	p := m.Profiles.MQTT
	r := awsauth.Request{
		SignatureVerified: signed,
		Protocols:         []string{"tls", "mqtt"},
		ProtocolData: awsauth.ProtocolData{
			TLS:  &awsauth.TLSData{ServerName: endpoint},
			MQTT: &awsauth.MQTTData{Username: p.Username, ClientID: p.ClientID},
		},
		ConnectionMetadata: awsauth.ConnectionMetadata{ID: "c0ffee00-0000-4000-8000-000000000001"},
	}
	if signed {
		r.Token = m.Token.Value // AWS extracts it by the token key name
	}
	if p.Password != "" {
		r.ProtocolData.MQTT.Password = base64.StdEncoding.EncodeToString([]byte(p.Password))
	}
	return r
}

func httpHeaderEvent(m target.Minted) awsauth.Request {
	return awsauth.Request{
		Token: m.Token.Value, SignatureVerified: true, Protocols: []string{"tls", "http"},
		ProtocolData: awsauth.ProtocolData{
			TLS:  &awsauth.TLSData{ServerName: endpoint},
			HTTP: &awsauth.HTTPData{Headers: m.Profiles.HTTPS.Headers, QueryString: "?qos=1"},
		},
		ConnectionMetadata: awsauth.ConnectionMetadata{ID: "c2"},
	}
}

func wsEvent(m target.Minted) awsauth.Request {
	u, _ := url.Parse(m.Profiles.MQTT.URL)
	return awsauth.Request{
		Token: m.Token.Value, SignatureVerified: true, Protocols: []string{"tls", "http", "mqtt"},
		ProtocolData: awsauth.ProtocolData{
			TLS:  &awsauth.TLSData{ServerName: endpoint},
			HTTP: &awsauth.HTTPData{Headers: map[string]string{"host": endpoint, "sec-websocket-protocol": "mqtt"}, QueryString: "?" + u.RawQuery},
			MQTT: &awsauth.MQTTData{ClientID: m.Profiles.MQTT.ClientID},
		},
		ConnectionMetadata: awsauth.ConnectionMetadata{ID: "c3"},
	}
}

func TestAccepts(t *testing.T) {
	signed := newFixture(t, true)
	unsigned := newFixture(t, false)
	tests := []struct {
		name  string
		f     *fixture
		event func(f *fixture) awsauth.Request
	}{
		{"MQTT, token extracted by AWS", signed, func(f *fixture) awsauth.Request {
			return mqttEvent(f.mint(t, device, t0, time.Hour, signer.TCP), true)
		}},
		{"MQTT, token in the user name only", signed, func(f *fixture) awsauth.Request {
			r := mqttEvent(f.mint(t, device, t0, time.Hour, signer.TCP), true)
			r.Token = ""
			return r
		}},
		{"MQTT without signing, token in the password", unsigned, func(f *fixture) awsauth.Request {
			return mqttEvent(f.mint(t, device, t0, time.Hour, signer.TCP), false)
		}},
		{"HTTPS publish, headers", signed, func(f *fixture) awsauth.Request {
			return httpHeaderEvent(f.mint(t, device, t0, time.Hour, signer.TCP))
		}},
		{"HTTPS publish, header names in another case, no event token", signed, func(f *fixture) awsauth.Request {
			r := httpHeaderEvent(f.mint(t, device, t0, time.Hour, signer.TCP))
			r.Token = ""
			r.ProtocolData.HTTP.Headers = map[string]string{"Token": r.ProtocolData.HTTP.Headers["token"]}
			return r
		}},
		{"HTTPS publish, query string", unsigned, func(f *fixture) awsauth.Request {
			m := f.mint(t, device, t0, time.Hour, signer.TCP)
			return awsauth.Request{Protocols: []string{"tls", "http"}, ProtocolData: awsauth.ProtocolData{
				HTTP: &awsauth.HTTPData{QueryString: "?qos=1&x-amz-customauthorizer-name=tokensvc&token=" + m.Token.Value}}}
		}},
		{"MQTT over WebSocket, query string", signed, func(f *fixture) awsauth.Request {
			return wsEvent(f.mint(t, device, t0, time.Hour, signer.WebSocket))
		}},
		{"MQTT over WebSocket without signing", unsigned, func(f *fixture) awsauth.Request {
			r := wsEvent(f.mint(t, device, t0, time.Hour, signer.WebSocket))
			r.Token, r.SignatureVerified = "", false
			return r
		}},
		{"within the leeway after exp", signed, func(f *fixture) awsauth.Request {
			return mqttEvent(f.mint(t, device, t0.Add(-time.Hour-20*time.Second), time.Hour, signer.TCP), true)
		}},
		{"ES256 issuer key", signed, func(f *fixture) awsauth.Request {
			m := f.mint(t, device, t0, time.Hour, signer.TCP)
			tok, err := f.iss.SignWith(f.iss.Current("ES256"), nil, claimsOf(t, m.Token.Value))
			if err != nil {
				t.Fatal(err)
			}
			r := mqttEvent(m, true)
			r.Token = tok
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.f.auth.Handle(context.Background(), tt.event(tt.f))
			if err != nil || !res.IsAuthenticated {
				t.Fatalf("got %+v, %v; want authenticated (log: %s)", res, err, tt.f.logs)
			}
			if res.PrincipalID != "sensor0001" && res.PrincipalID != awsauth.PrincipalID(device) {
				t.Errorf("principalId %q", res.PrincipalID)
			}
			checkPolicy(t, res)
		})
	}
}

// claimsOf returns a token's claims, unverified.
func claimsOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func checkPolicy(t *testing.T, res awsauth.Response) {
	t.Helper()
	arn := "arn:aws:iot:eu-west-1:" + account + ":"
	want := []awsauth.Statement{
		{Effect: "Allow", Action: "iot:Connect", Resource: arn + "client/sensor-0001"},
		{Effect: "Allow", Action: "iot:Publish", Resource: arn + "topic/devices/sensor-0001/telemetry"},
		{Effect: "Allow", Action: "iot:Subscribe", Resource: arn + "topicfilter/commands/sensor-0001/#"},
		{Effect: "Allow", Action: "iot:Receive", Resource: arn + "topic/commands/sensor-0001/*"},
		{Effect: "Allow", Action: "iot:Receive", Resource: arn + "topic/commands/sensor-0001"},
	}
	var got []awsauth.Statement
	for _, d := range res.PolicyDocuments {
		if len(d) > 2048 {
			t.Errorf("policy document of %d characters", len(d))
		}
		var p awsauth.Policy
		if err := json.Unmarshal([]byte(d), &p); err != nil {
			t.Fatalf("policy document is not JSON: %v", err)
		}
		if p.Version != "2012-10-17" {
			t.Errorf("version %q", p.Version)
		}
		got = append(got, p.Statement...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("statements:\n got %+v\nwant %+v", got, want)
	}
}

func TestRefuses(t *testing.T) {
	f := newFixture(t, true)
	other := testissuer.New(t, "https://elsewhere.example.com")
	sameName := testissuer.New(t, issuerURL) // same iss, keys the authorizer does not know
	good := func() target.Minted { return f.mint(t, device, t0, time.Hour, signer.TCP) }
	withToken := func(tok string) awsauth.Request {
		r := mqttEvent(good(), true)
		r.Token = tok
		return r
	}
	resign := func(iss *testissuer.Issuer, kid string, header map[string]any, edit func(c map[string]any)) string {
		c := claimsOf(t, good().Token.Value)
		if edit != nil {
			edit(c)
		}
		tok, err := iss.SignWith(kid, header, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	rotated := f.iss.Rotate(t, "RS256") // a key the authorizer's configuration lacks
	tests := []struct {
		name  string
		event func() awsauth.Request
	}{
		{"no token", func() awsauth.Request {
			r := mqttEvent(good(), true)
			r.Token, r.ProtocolData.MQTT.Username = "", device
			return r
		}},
		{"tampered payload", func() awsauth.Request {
			tok := good().Token.Value
			parts := strings.Split(tok, ".")
			c := claimsOf(t, tok)
			c["sub"] = "sensor-0002"
			b, _ := json.Marshal(c)
			return withToken(parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2])
		}},
		{"tampered signature", func() awsauth.Request {
			tok := good().Token.Value
			return withToken(tok[:len(tok)-4] + "AAAA")
		}},
		{"expired", func() awsauth.Request {
			return mqttEvent(f.mint(t, device, t0.Add(-2*time.Hour), time.Hour, signer.TCP), true)
		}},
		{"issued in the future", func() awsauth.Request {
			return mqttEvent(f.mint(t, device, t0.Add(10*time.Minute), time.Hour, signer.TCP), true)
		}},
		{"foreign issuer", func() awsauth.Request {
			return withToken(resign(other, other.Current("RS256"), nil, func(c map[string]any) { c["iss"] = other.Issuer() }))
		}},
		{"unknown key with our issuer's name", func() awsauth.Request {
			return withToken(resign(sameName, sameName.Current("RS256"), nil, nil))
		}},
		{"unknown kid (rotated in after the authorizer's keys were set)", func() awsauth.Request {
			return withToken(resign(f.iss, rotated, nil, nil))
		}},
		{"no kid", func() awsauth.Request {
			return withToken(resign(f.iss, f.iss.Current("RS256"), map[string]any{"kid": nil}, nil))
		}},
		{"crit header", func() awsauth.Request {
			return withToken(resign(f.iss, f.iss.Current("RS256"), map[string]any{"crit": []string{"exp"}}, nil))
		}},
		{"other device: client ID is not sub", func() awsauth.Request {
			r := mqttEvent(good(), true)
			r.ProtocolData.MQTT.ClientID = "sensor-0002"
			return r
		}},
		{"MQTT without a client ID", func() awsauth.Request {
			r := mqttEvent(good(), true)
			r.ProtocolData.MQTT.ClientID = ""
			return r
		}},
		{"mqtt protocol without mqtt data", func() awsauth.Request {
			r := mqttEvent(good(), true)
			r.ProtocolData.MQTT = nil
			return r
		}},
		{"wrong audience", func() awsauth.Request {
			return withToken(resign(f.iss, f.iss.Current("RS256"), nil, func(c map[string]any) { c["aud"] = "other-ats.iot.us-east-1.amazonaws.com" }))
		}},
		{"no exp", func() awsauth.Request {
			return withToken(resign(f.iss, f.iss.Current("RS256"), nil, func(c map[string]any) { delete(c, "exp") }))
		}},
		{"subject with a policy wildcard", func() awsauth.Request {
			r := withToken(resign(f.iss, f.iss.Current("RS256"), nil, func(c map[string]any) { c["sub"] = "sensor-*" }))
			r.ProtocolData.MQTT.ClientID = "sensor-*"
			return r
		}},
		{"alg none", func() awsauth.Request {
			tok := good().Token.Value
			c, _ := json.Marshal(claimsOf(t, tok))
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + f.iss.Current("RS256") + `"}`))
			return withToken(h + "." + base64.RawURLEncoding.EncodeToString(c) + ".")
		}},
		{"HS256 keyed with the public key", func() awsauth.Request {
			tok := good().Token.Value
			parts := strings.Split(tok, ".")
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"` + f.iss.Current("RS256") + `"}`))
			return withToken(h + "." + parts[1] + "." + parts[2])
		}},
		{"password not base64", func() awsauth.Request {
			r := mqttEvent(good(), true)
			r.Token, r.ProtocolData.MQTT.Username, r.ProtocolData.MQTT.Password = "", device, "%%%"
			return r
		}},
		{"garbage token", func() awsauth.Request { return withToken("not.a.jwt") }},
		{"huge token", func() awsauth.Request { return withToken(strings.Repeat("a", 10000)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.logs.Reset()
			r := tt.event()
			res, err := f.auth.Handle(context.Background(), r)
			if err != nil || res.IsAuthenticated || len(res.PolicyDocuments) != 0 {
				t.Fatalf("got %+v, %v; want refused", res, err)
			}
			if !strings.Contains(f.logs.String(), "connection refused") {
				t.Errorf("no refusal logged: %s", f.logs)
			}
			for _, secret := range []string{r.Token, good().Token.Value} {
				for _, part := range strings.Split(secret, ".") {
					if len(part) > 8 && strings.Contains(f.logs.String(), part) {
						t.Errorf("a token reached the log: %s", f.logs)
					}
				}
			}
		})
	}
}

func TestConnectionLifetime(t *testing.T) {
	f := newFixture(t, true)
	tests := []struct {
		name string
		ttl  time.Duration
		want int
	}{
		{"an hour", time.Hour, 3600},
		{"below AWS's minimum", 2 * time.Minute, 300},
		{"above AWS's maximum", 48 * time.Hour, 86400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, _ := f.auth.Handle(context.Background(), mqttEvent(f.mint(t, device, t0, tt.ttl, signer.TCP), true))
			if !res.IsAuthenticated || res.DisconnectAfterInSeconds != tt.want || res.RefreshAfterInSeconds != tt.want {
				t.Fatalf("got %+v, want disconnect and refresh after %d s", res, tt.want)
			}
		})
	}
}

func TestPrincipalID(t *testing.T) {
	for _, id := range []string{"sensor0001", "sensor-0001", "a.b", strings.Repeat("x", 128)} {
		p := awsauth.PrincipalID(id)
		if len(p) < 1 || len(p) > 128 || strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			t.Errorf("PrincipalID(%q) = %q: not 1 to 128 letters and digits", id, p)
		}
	}
	if awsauth.PrincipalID("sensor-0001") == awsauth.PrincipalID("sensor0001") {
		t.Error("two devices share a principal ID")
	}
}

func TestPolicyDocumentsSplit(t *testing.T) {
	c := awsauth.Config{Region: "eu-west-1", AccountID: account, TopicTemplate: "t/{deviceId}"}
	for i := range 16 {
		c.SubscribeTemplates = append(c.SubscribeTemplates, strings.Repeat("s", 100)+"/"+string(rune('a'+i))+"/{deviceId}/#")
	}
	docs, err := awsauth.PolicyDocuments(c.Statements(strings.Repeat("d", 128)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range docs {
		var p awsauth.Policy
		if len(d) > 2048 || json.Unmarshal([]byte(d), &p) != nil {
			t.Fatalf("document of %d characters, or not JSON", len(d))
		}
		n += len(p.Statement)
	}
	if len(docs) < 2 || len(docs) > 10 || n != 2+16*3 {
		t.Fatalf("got %d documents with %d statements", len(docs), n)
	}
}

func TestJWKSKeySource(t *testing.T) {
	f := newFixture(t, true)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		f.iss.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := f.cfg
	c.Keys, c.JWKSURL = "", srv.URL+"/.well-known/jwks.json"
	a := f.newAuthorizer(t, c)
	ok := func(m target.Minted) bool {
		res, _ := a.Handle(context.Background(), mqttEvent(m, true))
		return res.IsAuthenticated
	}
	if !ok(f.mint(t, device, t0, time.Hour, signer.TCP)) {
		t.Fatalf("a token of a published key is refused: %s", f.logs)
	}
	// Rotation: the new key is published before it signs; the authorizer has an older
	// copy of the set and fetches it again for the unknown kid.
	old := f.iss.Current("RS256")
	f.iss.Rotate(t, "RS256")
	if !ok(f.mint(t, device, t0, time.Hour, signer.TCP)) {
		t.Fatalf("a token of a newly published key is refused: %s", f.logs)
	}
	// A key rotated out and no longer published: the set is fetched again on the
	// refresh interval; an authorizer started now no longer knows it.
	oldTok := mqttEvent(f.mint(t, device, t0, time.Hour, signer.TCP), true)
	oldTok.Token, _ = f.iss.SignWith(old, nil, claimsOf(t, oldTok.Token))
	f.iss.Unpublish(old)
	fresh := f.newAuthorizer(t, c)
	if res, _ := fresh.Handle(context.Background(), oldTok); res.IsAuthenticated {
		t.Fatal("a token of an unpublished key is accepted")
	}
	if fetches.Load() < 3 {
		t.Errorf("the JWKS was fetched %d times, want a fetch per start and one for the unknown kid", fetches.Load())
	}
}

func TestInlineJWKS(t *testing.T) {
	f := newFixture(t, true)
	c := f.cfg
	c.Keys = string(f.iss.JWKS())
	a := f.newAuthorizer(t, c)
	if res, _ := a.Handle(context.Background(), mqttEvent(f.mint(t, device, t0, time.Hour, signer.TCP), true)); !res.IsAuthenticated {
		t.Fatalf("refused with the JWKS inline: %s", f.logs)
	}
}

func TestFromEnv(t *testing.T) {
	iss := testissuer.New(t, issuerURL)
	base := map[string]string{
		awsauth.EnvIssuer: issuerURL, awsauth.EnvEndpoint: endpoint, awsauth.EnvJWKSURL: "https://tokensvc.example.com/.well-known/jwks.json",
		awsauth.EnvTokenKeyName: "token", awsauth.EnvRegion: "eu-west-1", awsauth.EnvAccountID: account,
	}
	tests := []struct {
		name    string
		set     map[string]string
		wantErr string
	}{
		{"minimal", nil, ""},
		{"subscribe templates", map[string]string{awsauth.EnvSubscribeTemplates: "commands/{deviceId}/#, cfg/{deviceId}"}, ""},
		{"PEM keys instead", map[string]string{awsauth.EnvJWKSURL: "", awsauth.EnvKeys: pemKeys(iss, iss.Current("RS256"))}, ""},
		{"no issuer", map[string]string{awsauth.EnvIssuer: ""}, awsauth.EnvIssuer},
		{"no keys", map[string]string{awsauth.EnvJWKSURL: ""}, awsauth.EnvKeys},
		{"both key sources", map[string]string{awsauth.EnvKeys: "x"}, awsauth.EnvKeys},
		{"bad account", map[string]string{awsauth.EnvAccountID: "12345"}, awsauth.EnvAccountID},
		{"topic without device", map[string]string{awsauth.EnvTopicTemplate: "telemetry"}, awsauth.EnvTopicTemplate},
		{"bad leeway", map[string]string{awsauth.EnvLeeway: "-1"}, awsauth.EnvLeeway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.set {
				env[k] = v
			}
			c, err := awsauth.FromEnv(func(k string) string { return env[k] })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.TopicTemplate != awsiot.DefaultTopicTemplate || c.Leeway != awsauth.DefaultLeeway {
					t.Errorf("defaults: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestParsePEMKeysRefuses(t *testing.T) {
	iss := testissuer.New(t, issuerURL)
	kid := iss.Current("RS256")
	for name, s := range map[string]string{
		"no kid header": iss.PublicPEM(kid),
		"twice":         pemKeys(iss, kid, kid),
		"nothing":       "hello",
	} {
		if _, err := awsauth.ParsePEMKeys(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkHandle is one authorizer invocation for an MQTT CONNECT: token extraction,
// RS256 verification, claims, policy documents.
func BenchmarkHandle(b *testing.B) {
	iss := testissuer.New(b, issuerURL)
	h := awspeer.Hub(b, endpoint, true)
	m, err := awsiot.Kind{}.Mint(context.Background(), target.Signers{Issuer: iss}, h,
		target.Request{Device: domain.Device{ID: device}, TTL: time.Hour, Now: t0})
	if err != nil {
		b.Fatal(err)
	}
	keys, err := awsauth.ParsePEMKeys(pemKeys(iss, iss.Current("RS256")))
	if err != nil {
		b.Fatal(err)
	}
	a, err := awsauth.New(awsauth.Config{Issuer: issuerURL, Endpoint: endpoint, Keys: "inline", TokenKeyName: "token",
		Region: "eu-west-1", AccountID: account, SubscribeTemplates: []string{"commands/{deviceId}/#"}},
		keys, func() time.Time { return t0 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ev := mqttEvent(m, true)
	b.ReportAllocs()
	for b.Loop() {
		if res, _ := a.Handle(context.Background(), ev); !res.IsAuthenticated {
			b.Fatal("refused")
		}
	}
}

// TestJWKSUnreachableAtStart: a cold start while tokensvc cannot be reached refuses
// (never panics, never accepts), and the next token fetches the key set again.
func TestJWKSUnreachableAtStart(t *testing.T) {
	f := newFixture(t, true)
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		f.iss.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := f.cfg
	c.Keys, c.JWKSURL, c.RefetchUnknown = "", srv.URL, 20*time.Millisecond
	a := f.newAuthorizer(t, c)
	ev := mqttEvent(f.mint(t, device, t0, time.Hour, signer.TCP), true)
	if res, _ := a.Handle(context.Background(), ev); res.IsAuthenticated {
		t.Fatal("accepted without any key")
	}
	up.Store(true)
	// The unknown kid is fetched for again once the rate limit allows (20 ms here,
	// 10 s by default).
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, _ := a.Handle(context.Background(), ev)
		if res.IsAuthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused once the key set is reachable: %s", f.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
