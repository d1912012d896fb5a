package jwtbroker_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqtt5link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer/jwtpeer"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/testclock"
)

func ptr[T any](v T) *T { return &v }

// tokenHolder is a link.TokenSource over fetched tokens.
type tokenHolder struct{ token.Holder }

func (*tokenHolder) Invalidate() {}

// TestEventGridEndToEnd provisions an Event Grid namespace hub and a device over the
// API of the service app.New builds, fetches the device's JWT, and has the stand-in
// broker verify it against the service's published JWKS — over MQTT 5 with CUSTOM-JWT
// enhanced authentication, through a key rotation (re-authentication with the new
// key's token) and until the old key leaves the JWKS.
func TestEventGridEndToEnd(t *testing.T) {
	start := time.Now()
	clk := testclock.New(start.Truncate(time.Second))
	svc := jwtpeer.StartService(t, clk.Now)
	ctx := t.Context()

	bad := []struct {
		name      string
		hub       oapi.HubCreate
		wantField string
	}{
		{"authMethod on MQTT 3.1.1", oapi.HubCreate{Name: "bad1", Kind: "jwtbroker", Hostname: "emqx.example.com",
			MqttVersion: ptr(oapi.HubCreateMqttVersionN311), AuthMethod: ptr("CUSTOM-JWT")}, "authMethod"},
		{"claims setting sub", oapi.HubCreate{Name: "bad2", Kind: "jwtbroker", Hostname: "emqx.example.com",
			Claims: &map[string]any{"sub": "someone-else"}}, "claims"},
		{"ES256 for Event Grid", oapi.HubCreate{Name: "bad3", Kind: "jwtbroker", Hostname: egHost,
			Algorithm: ptr(oapi.HubCreateAlgorithmES256)}, "algorithm"},
		{"policy mode", oapi.HubCreate{Name: "bad4", Kind: "jwtbroker", Hostname: "emqx.example.com",
			Mode: ptr(oapi.SigningMode("policy"))}, "mode"},
	}
	for _, tt := range bad {
		resp, err := svc.Admin.CreateHubWithResponse(ctx, tt.hub)
		if err != nil {
			t.Fatal(err)
		}
		p := resp.ApplicationproblemJSON400
		if resp.StatusCode() != http.StatusBadRequest || p == nil || p.Detail == nil || !strings.Contains(*p.Detail, tt.wantField) {
			t.Errorf("%s: got %d %s, want a 400 problem naming %s", tt.name, resp.StatusCode(), resp.Body, tt.wantField)
		}
	}

	resp, err := svc.Admin.CreateHubWithResponse(ctx, oapi.HubCreate{Name: "eg", Kind: "jwtbroker", Hostname: egHost,
		Audience: ptr(egAudience), AuthMethod: ptr("CUSTOM-JWT"), MqttVersion: ptr(oapi.HubCreateMqttVersionN5), Port: ptr(8883),
		Claims: &map[string]any{"room": "r-{deviceId}", "floor": 3, "groups": []string{"sensors"}}})
	if err != nil || resp.JSON201 == nil {
		t.Fatalf("create hub: %v %d %s", err, resp.StatusCode(), resp.Body)
	}
	if h := resp.JSON201; h.Algorithm == nil || *h.Algorithm != "RS256" || h.Mode != "jwt" {
		t.Errorf("hub: got algorithm %v, mode %s; want RS256, jwt", h.Algorithm, h.Mode)
	}
	fc := svc.Device("pump-7", "eg")
	tok, err := fc.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := tok.Response
	m := r.Mqtt
	if r.Kind != "jwtbroker" || r.Resource != egAudience || m == nil || m.AuthMethod == nil || *m.AuthMethod != "CUSTOM-JWT" ||
		m.Password != "" || m.ProtocolVersion != "5" || m.Port != 8883 || m.ClientId != "pump-7" || m.Host != egHost {
		t.Fatalf("token response: got %+v, mqtt %+v", r, m)
	}

	verifier, err := jwtpeer.NewVerifier(ctx, jwtpeer.VerifyOptions{JWKSURL: svc.JWKSURL(), HTTPClient: svc.HTTPClient,
		Issuer: jwtpeer.ServiceIssuer, Audience: egAudience, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	v, reason := verifier.Verify(ctx, r.Token, "pump-7")
	if reason != "" {
		t.Fatalf("the broker refuses the service's token: %s", reason)
	}
	if v.Claims["room"] != "r-pump-7" || v.Claims["floor"] != float64(3) || v.Claims["nbf"] == nil {
		t.Errorf("claims: got %v, want the expanded client attributes and nbf", v.Claims)
	}
	hdr, _, err := jwt.NewParser().ParseUnverified(r.Token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Header["alg"] != "RS256" || hdr.Header["typ"] != "JWT" {
		t.Errorf("header: got %v, want alg RS256 and typ JWT (Event Grid's requirements)", hdr.Header)
	}
	// Event Grid gets the issuer's public key as a certificate: it verifies the token.
	oldKid := hdr.Header["kid"].(string)
	cert := issuerCertificate(t, svc, oldKid)
	if _, err := jwt.Parse(r.Token, func(*jwt.Token) (any, error) { return cert.PublicKey, nil },
		jwt.WithTimeFunc(clk.Now), jwt.WithAudience(egAudience), jwt.WithIssuer(jwtpeer.ServiceIssuer)); err != nil {
		t.Errorf("the token does not verify with the key's certificate: %v", err)
	}

	// The device connects with it and keeps its session through a rotation.
	leaf := svc.CA.Issue(t, testca.Spec{CommonName: egHost, Hosts: []string{egHost}})
	broker := jwtpeer.StartBroker(t, jwtpeer.BrokerOptions{
		VerifyOptions: jwtpeer.VerifyOptions{JWKSURL: svc.JWKSURL(), HTTPClient: svc.HTTPClient,
			Issuer: jwtpeer.ServiceIssuer, Audience: egAudience, Now: clk.Now},
		Cert: leaf.TLS(), AuthMethod: "CUSTOM-JWT",
	})
	src := &tokenHolder{}
	src.Set(tok)
	msgs := make(chan telemetry.Message)
	l := mqtt5link.New(mqtt5link.Options{
		Common: link.Common{Source: src, Messages: msgs, DialAddr: broker.Addr, RootCAs: svc.Pool,
			Backoff: backoff.Policy{Min: 50 * time.Millisecond, Max: time.Second}, Timeout: 5 * time.Second,
			Now: clk.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		QoS: 1,
	})
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx) }()
	t.Logf("%v: link running; JWKS %v, token kid %s", time.Since(start), jwksKids(t, svc), oldKid)
	msgs <- telemetry.Message{Body: []byte("before")}
	t.Logf("%v: first message taken", time.Since(start))

	rot, err := svc.Admin.RotateIssuerKeyWithResponse(ctx, oapi.IssuerKeyRotate{Alg: "RS256"})
	if err != nil || rot.JSON201 == nil {
		t.Fatalf("rotate: %v %d %s", err, rot.StatusCode(), rot.Body)
	}
	clk.Advance(issuerkeys.DefaultLead) // the new key signs now
	next, err := fc.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kid := kidOf(t, next.Response.Token); kid != rot.JSON201.Kid {
		t.Fatalf("after the lead the token is signed by %s, want the new key %s", kid, rot.JSON201.Kid)
	}
	t.Logf("%v: rotated, new token fetched; JWKS %v", time.Since(start), jwksKids(t, svc))
	src.Set(next)
	msgs <- telemetry.Message{Body: []byte("after")}
	t.Logf("%v: second message taken", time.Since(start))
	waitFor(t, func() bool { return len(broker.Published()) >= 2 && l.Stats().ReAuths >= 1 },
		func() string { return fmt.Sprintf("link %+v, broker %+v", l.Stats(), broker.Stats()) })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if bs := broker.Stats(); bs.Accepted != 1 || bs.ReAuths != 1 || len(bs.Refused) != 0 || len(broker.Published()) != 2 {
		t.Errorf("broker: got %+v, want one CONNECT and one re-authentication", bs)
	}
	// Rotation never refuses a credential that is still valid: the old token verifies.
	if _, reason := verifier.Verify(ctx, r.Token, "pump-7"); reason != "" {
		t.Errorf("the old key's unexpired token after rotation: refused (%s)", reason)
	}

	// Once the old key's credentials have all expired it leaves the JWKS; a broker that
	// fetches it again no longer knows the key.
	clk.Advance(25 * time.Hour)
	later, err := jwtpeer.NewVerifier(ctx, jwtpeer.VerifyOptions{JWKSURL: svc.JWKSURL(), HTTPClient: svc.HTTPClient,
		Issuer: jwtpeer.ServiceIssuer, Audience: egAudience, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, reason := later.Verify(ctx, r.Token, "pump-7"); reason != jwtpeer.RefusedUnknownKey {
		t.Errorf("rotated-out key's token: got %q, want %q", reason, jwtpeer.RefusedUnknownKey)
	}
}

func issuerCertificate(t *testing.T, svc *jwtpeer.Service, kid string) *x509.Certificate {
	t.Helper()
	resp, err := svc.HTTPClient.Get(svc.URL + "/issuer/keys/" + kid + "/certificate.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	block, _ := pem.Decode(b)
	if resp.StatusCode != http.StatusOK || block == nil {
		t.Fatalf("certificate.pem: got %d %q", resp.StatusCode, b)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	hdr, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := hdr.Header["kid"].(string)
	return kid
}

func waitFor(t *testing.T, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 20 s: %s", state())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jwksKids(t *testing.T, svc *jwtpeer.Service) []string {
	resp, err := svc.Client("").GetJwksWithResponse(t.Context())
	if err != nil || resp.JSON200 == nil {
		t.Fatalf("jwks: %v", err)
	}
	var out []string
	for _, k := range resp.JSON200.Keys {
		out = append(out, k.Kid)
	}
	return out
}

// TestHubNeedsIssuerURL: a service without an issuer URL refuses jwtbroker hubs with a
// 400 that says what to set, instead of failing every token request later.
func TestHubNeedsIssuerURL(t *testing.T) {
	svc := apptest.Start(t, apptest.Options{})
	resp, err := svc.Admin.CreateHubWithResponse(t.Context(), oapi.HubCreate{Name: "b", Kind: "jwtbroker", Hostname: "emqx.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p := resp.ApplicationproblemJSON400
	if p == nil || p.Detail == nil || !strings.Contains(*p.Detail, "TOKENSVC_ISSUER_URL") {
		t.Errorf("got %d %s, want a 400 naming TOKENSVC_ISSUER_URL", resp.StatusCode(), resp.Body)
	}
}
