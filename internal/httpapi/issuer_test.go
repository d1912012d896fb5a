package httpapi_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

const testIssuer = "https://tokens.example.com"

func mustIssuerEnv(t *testing.T, tweak func(c *app.Config)) *env {
	t.Helper()
	return mustEnvWith(t, envOptions{config: func(c *app.Config) {
		c.Issuer.Issuer = testIssuer
		if tweak != nil {
			tweak(c)
		}
	}})
}

// jwks fetches the published key set the way a broker does, checking its caching.
func (e *env) jwks() map[string]oapi.Jwk {
	e.t.Helper()
	resp, err := e.anon.GetJwksWithResponse(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode() != http.StatusOK || resp.JSON200 == nil {
		e.t.Fatalf("GET /.well-known/jwks.json: %d %s", resp.StatusCode(), resp.Body)
	}
	// The ring's publication lead is built on this max-age: the two must agree.
	want := fmt.Sprintf("public, max-age=%d", int(issuerkeys.JWKSMaxAge.Seconds()))
	if cc := resp.HTTPResponse.Header.Get("Cache-Control"); cc != want {
		e.t.Errorf("JWKS Cache-Control %q, want %q", cc, want)
	}
	out := map[string]oapi.Jwk{}
	for _, k := range resp.JSON200.Keys {
		out[k.Kid] = k
	}
	return out
}

// jwkKey turns a published JWK into a public key, as a broker would.
func jwkKey(t *testing.T, j oapi.Jwk) crypto.PublicKey {
	t.Helper()
	d := func(s *string) *big.Int {
		if s == nil {
			t.Fatalf("JWK %s lacks a member", j.Kid)
		}
		b, err := base64.RawURLEncoding.DecodeString(*s)
		if err != nil {
			t.Fatal(err)
		}
		return new(big.Int).SetBytes(b)
	}
	switch j.Kty {
	case oapi.RSA:
		return &rsa.PublicKey{N: d(j.N), E: int(d(j.E).Int64())}
	case oapi.EC:
		return &ecdsa.PublicKey{Curve: elliptic.P256(), X: d(j.X), Y: d(j.Y)}
	}
	t.Fatalf("JWK kty %q", j.Kty)
	return nil
}

func verifyWith(t *testing.T, tok string, pub crypto.PublicKey, now time.Time) {
	t.Helper()
	_, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"RS256", "ES256"}), jwt.WithIssuer(testIssuer), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		t.Errorf("token does not verify: %v", err)
	}
}

func (e *env) pem(path string) (int, *pem.Block) {
	e.t.Helper()
	resp, body := e.rawRequest(http.MethodGet, path, "", "", nil)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=300") {
		e.t.Errorf("%s: Cache-Control %q", path, cc)
	}
	b, _ := pem.Decode(body)
	if b == nil {
		e.t.Fatalf("%s: no PEM block in %q", path, body)
	}
	return resp.StatusCode, b
}

// TestIssuerKeysPublished: the keys the ring signs with are served as a JWK set, PEM
// public keys and self-signed certificates that verify its JWTs; a rotated-in key is
// published before it signs, and the key it replaces stays published until every
// credential it signed has expired.
func TestIssuerKeysPublished(t *testing.T) {
	e := mustIssuerEnv(t, func(c *app.Config) { c.Issuer.MaxLifetime = 2 * time.Hour })
	ring := e.svc.App.IssuerKeys()
	sign := func(alg string) (string, string) {
		t.Helper()
		now := e.clock.Now()
		tok, kid, err := ring.SignJWT(t.Context(), alg, map[string]any{"iss": testIssuer, "sub": "d1", "exp": now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok, kid
	}
	for _, alg := range []string{"ES256", "RS256"} {
		tok, kid := sign(alg)
		j, ok := e.jwks()[kid]
		if !ok || string(j.Alg) != alg || j.Use != oapi.Sig {
			t.Fatalf("%s key %s not in the JWKS as alg %s, use sig: %+v", alg, kid, alg, j)
		}
		verifyWith(t, tok, jwkKey(t, j), e.clock.Now())

		_, block := e.pem("/issuer/keys/" + kid + "/public-key.pem")
		if block == nil || block.Type != "PUBLIC KEY" {
			t.Fatalf("%s: public-key.pem: %v", kid, block)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		verifyWith(t, tok, pub, e.clock.Now())

		_, block = e.pem("/issuer/keys/" + kid + "/certificate.pem")
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("%s: certificate.pem: %v", kid, block)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		verifyWith(t, tok, cert.PublicKey, e.clock.Now())
		if cert.Subject.CommonName != "tokens.example.com" {
			t.Errorf("certificate CN %q, want the issuer host", cert.Subject.CommonName)
		}
	}

	// Rotation: the new key is published at once, signs after the lead.
	oldTok, oldKid := sign("ES256")
	resp, err := e.admin.RotateIssuerKeyWithResponse(t.Context(), oapi.IssuerKeyRotate{Alg: oapi.IssuerKeyAlgorithm("ES256")})
	if err != nil || resp.StatusCode() != http.StatusCreated {
		t.Fatalf("rotate: %v %d %s", err, resp.StatusCode(), resp.Body)
	}
	next := *resp.JSON201
	if next.State != oapi.IssuerKeyState("pending") || !next.SignsFrom.Equal(e.clock.Now().Add(issuerkeys.DefaultLead)) {
		t.Errorf("rotated-in key: state %s, signsFrom %v", next.State, next.SignsFrom)
	}
	if _, ok := e.jwks()[next.Kid]; !ok {
		t.Error("a pending key is not published")
	}
	if _, kid := sign("ES256"); kid != oldKid {
		t.Errorf("during the lead the new key %s signs", kid)
	}
	e.clock.Advance(issuerkeys.DefaultLead)
	if _, kid := sign("ES256"); kid != next.Kid {
		t.Errorf("after the lead %s signs, want %s", kid, next.Kid)
	}
	// The old key's credential is valid for up to its hour; the key stays published
	// for the longest lifetime (2h) plus the skew margin.
	e.clock.Advance(2*time.Hour + issuerkeys.SkewMargin - time.Second)
	j, ok := e.jwks()[oldKid]
	if !ok {
		t.Fatal("the retired key left the JWKS before publishedUntil")
	}
	verifyWith(t, oldTok, jwkKey(t, j), e.clock.Now().Add(-2*time.Hour))
	list, err := e.admin.ListIssuerKeysWithResponse(t.Context())
	if err != nil || list.JSON200 == nil {
		t.Fatalf("list: %v", err)
	}
	i := slices.IndexFunc(list.JSON200.Items, func(k oapi.IssuerKey) bool { return k.Kid == oldKid })
	if i < 0 || list.JSON200.Items[i].State != oapi.IssuerKeyState("retired") || list.JSON200.Items[i].PublishedUntil == nil {
		t.Fatalf("list: old key %+v", list.JSON200.Items)
	}
	e.clock.Advance(time.Second)
	if _, ok := e.jwks()[oldKid]; ok {
		t.Error("the retired key is still published after publishedUntil")
	}
	if code, _ := e.pem("/issuer/keys/" + oldKid + "/public-key.pem"); code != http.StatusNotFound {
		t.Errorf("unpublished key's PEM: %d, want 404", code)
	}
}

// TestRotateIssuerKeyNeedsAdmin: only the admin role rotates; a bad algorithm is a 400.
func TestRotateIssuerKeyNeedsAdmin(t *testing.T) {
	issuer, sign := mustIssuer(t)
	// No issuer URL: no keys are made at start, so the count below is the admin's alone.
	e := mustEnvWith(t, envOptions{config: func(c *app.Config) {
		c.OIDC.Issuer, c.OIDC.Audience, c.OIDC.JWKSURL = issuer, "tokensvc-operators", issuer+"/keys"
		c.OIDC.Algorithms = []string{"ES256"}
	}})
	now := e.clock.Now()
	operator := sign(jwt.MapClaims{"sub": "otto", "aud": "tokensvc-operators", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "roles": []string{"operator"}})
	tests := []struct {
		name   string
		bearer string
		body   string
		want   int
	}{
		{"no credential", "", `{"alg":"ES256"}`, http.StatusUnauthorized},
		{"operator role", operator, `{"alg":"ES256"}`, http.StatusForbidden},
		{"admin, bad alg", adminToken, `{"alg":"HS256"}`, http.StatusBadRequest},
		{"admin", adminToken, `{"alg":"RS256"}`, http.StatusCreated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.rawRequest(http.MethodPost, "/issuer/keys/rotate", tc.bearer, "application/json", strings.NewReader(tc.body))
			if resp.StatusCode != tc.want {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusBadRequest && !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
				t.Errorf("400 as %q, want problem+json", resp.Header.Get("Content-Type"))
			}
		})
	}
	if keys := e.jwks(); len(keys) != 1 {
		t.Errorf("%d keys published, want the admin's one", len(keys))
	}
}
