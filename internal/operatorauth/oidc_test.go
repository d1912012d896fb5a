package operatorauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/testclock"
)

const audience = "tokensvc-operators"

// idp is a local issuer: discovery document and JWKS, keys changeable mid-test.
type idp struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []map[string]string
	fetches atomic.Int64
}

func mustIDP(t *testing.T) *idp {
	t.Helper()
	p := &idp{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"keys": p.keys})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) publish(keys ...map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PrivateKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PrivateKey) map[string]string {
	b, _ := k.PublicKey.Bytes() // 0x04 || X || Y
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(b[1:33]), "y": b64(b[33:])}
}

func mustSign(t *testing.T, m jwt.SigningMethod, kid string, claims jwt.MapClaims, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOIDCVerify(t *testing.T) {
	p := mustIDP(t)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.publish(rsaJWK("r1", rsaKey), ecJWK("e1", ecKey))
	clk := testclock.New(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	v, err := operatorauth.NewOIDC(operatorauth.OIDCConfig{Issuer: p.srv.URL, Audience: audience}, nil, clk.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": p.srv.URL, "aud": audience, "sub": "alice", "exp": clk.Now().Add(5 * time.Minute).Unix(), "iat": clk.Now().Unix(), "roles": []string{"operator"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	none := mustSign(t, jwt.SigningMethodNone, "r1", claims(nil), jwt.UnsafeAllowNoneSignatureType)

	tests := []struct {
		name    string
		token   string
		want    operatorauth.Principal
		wantErr bool
	}{
		{name: "admin RS256", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { c["roles"] = []string{"reader", "admin"} }), rsaKey), want: operatorauth.Principal{Subject: "alice", Role: operatorauth.RoleAdmin}},
		{name: "operator ES256", token: mustSign(t, jwt.SigningMethodES256, "e1", claims(nil), ecKey), want: operatorauth.Principal{Subject: "alice", Role: operatorauth.RoleOperator}},
		{name: "reader as a string claim", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { c["roles"] = "reader" }), rsaKey), want: operatorauth.Principal{Subject: "alice", Role: operatorauth.RoleReader}},
		{name: "no known role", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { c["roles"] = []string{"superuser"} }), rsaKey), want: operatorauth.Principal{Subject: "alice"}},
		{name: "wrong issuer", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), rsaKey), wantErr: true},
		{name: "wrong audience", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" }), rsaKey), wantErr: true},
		{name: "expired", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { c["exp"] = clk.Now().Add(-time.Minute).Unix() }), rsaKey), wantErr: true},
		{name: "no exp", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { delete(c, "exp") }), rsaKey), wantErr: true},
		{name: "no sub", token: mustSign(t, jwt.SigningMethodRS256, "r1", claims(func(c jwt.MapClaims) { delete(c, "sub") }), rsaKey), wantErr: true},
		{name: "alg none", token: none, wantErr: true},
		{name: "HS256 keyed with the public key", token: mustSign(t, jwt.SigningMethodHS256, "r1", claims(nil), pubDER), wantErr: true},
		{name: "signed by another key under a known kid", token: mustSign(t, jwt.SigningMethodES256, "e1", claims(nil), testca.P256Key(t)), wantErr: true},
		{name: "RS256 kid with EC signature", token: mustSign(t, jwt.SigningMethodES256, "r1", claims(nil), ecKey), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.token)
			if tc.wantErr {
				if !errors.Is(err, operatorauth.ErrUnauthenticated) {
					t.Fatalf("got %+v, %v; want ErrUnauthenticated", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestOIDCUnknownKidRefetchesRateLimited(t *testing.T) {
	p := mustIDP(t)
	old, next := testca.P256Key(t), testca.P256Key(t)
	p.publish(ecJWK("old", old))
	clk := testclock.New(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	v, err := operatorauth.NewOIDC(operatorauth.OIDCConfig{Issuer: p.srv.URL, Audience: audience, JWKSURL: p.srv.URL + "/keys", RolesClaim: "realm_access.roles", Algorithms: []string{"ES256"}, MinRefetch: time.Minute}, nil, clk.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok := func(kid string, key *ecdsa.PrivateKey) string {
		return mustSign(t, jwt.SigningMethodES256, kid, jwt.MapClaims{"iss": p.srv.URL, "aud": []string{"x", audience}, "sub": "bob", "exp": clk.Now().Add(time.Minute).Unix(), "realm_access": map[string]any{"roles": []string{"reader"}}}, key)
	}
	// The issuer rotates; a token with the new kid arrives within MinRefetch of the last
	// fetch: refused without a fetch.
	p.publish(ecJWK("old", old), ecJWK("new", next))
	clk.Advance(10 * time.Second)
	if _, err := v.Verify(tok("new", next)); err == nil {
		t.Fatal("unknown kid within MinRefetch: got success, want refusal")
	}
	if got := p.fetches.Load(); got != 1 {
		t.Fatalf("fetches: got %d, want 1 (refetch rate-limited)", got)
	}
	clk.Advance(time.Minute)
	got, err := v.Verify(tok("new", next))
	if err != nil || got.Role != operatorauth.RoleReader || got.Subject != "bob" {
		t.Fatalf("after refetch: got %+v, %v; want bob as reader", got, err)
	}
	if got := p.fetches.Load(); got != 2 {
		t.Fatalf("fetches: got %d, want 2", got)
	}
	// Made-up kids do not cause more fetches.
	for range 5 {
		if _, err := v.Verify(tok("made-up", next)); err == nil {
			t.Fatal("made-up kid: got success")
		}
	}
	if got := p.fetches.Load(); got != 2 {
		t.Fatalf("fetches after made-up kids: got %d, want 2", got)
	}
}

// TestOIDCNamespacedRolesClaim: a roles claim whose name holds dots (Auth0's namespaced
// custom claims) is read by its whole name; dots still walk into objects otherwise.
func TestOIDCNamespacedRolesClaim(t *testing.T) {
	p := mustIDP(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.publish(ecJWK("e1", key))
	clk := testclock.New(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		claim  string
		claims jwt.MapClaims
		want   operatorauth.Role
	}{
		{"https://tokensvc.example.com/roles", jwt.MapClaims{"https://tokensvc.example.com/roles": []string{"operator"}}, operatorauth.RoleOperator},
		{"realm_access.roles", jwt.MapClaims{"realm_access": map[string]any{"roles": []string{"reader"}}}, operatorauth.RoleReader},
	} {
		t.Run(tc.claim, func(t *testing.T) {
			v, err := operatorauth.NewOIDC(operatorauth.OIDCConfig{Issuer: p.srv.URL, Audience: audience, RolesClaim: tc.claim, Algorithms: []string{"ES256"}}, nil, clk.Now, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Fetch(t.Context()); err != nil {
				t.Fatal(err)
			}
			c := jwt.MapClaims{"iss": p.srv.URL, "aud": audience, "sub": "alice", "exp": clk.Now().Add(time.Minute).Unix()}
			maps.Copy(c, tc.claims)
			got, err := v.Verify(mustSign(t, jwt.SigningMethodES256, "e1", c, key))
			if err != nil || got.Role != tc.want {
				t.Fatalf("got %+v, %v; want role %q", got, err, tc.want)
			}
		})
	}
}

func TestNewOIDCRejectsSymmetricAlgorithms(t *testing.T) {
	for _, alg := range []string{"HS256", "none", ""} {
		if _, err := operatorauth.NewOIDC(operatorauth.OIDCConfig{Issuer: "https://i", Audience: "a", Algorithms: []string{alg}}, nil, nil, nil); err == nil {
			t.Errorf("algorithm %q: got no error", alg)
		}
	}
}

type staticToken string

func (s staticToken) Check(tok string) bool { return tok == string(s) }

func TestAuthenticateAndAllow(t *testing.T) {
	a := operatorauth.New(staticToken("static-admin-token-123456"), nil)
	req := func(auth string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/hubs", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		return r
	}
	if p, err := a.Authenticate(req("Bearer static-admin-token-123456")); err != nil || p.Role != operatorauth.RoleAdmin || p.Subject != "admin" {
		t.Errorf("static token: got %+v, %v", p, err)
	}
	for _, h := range []string{"", "Bearer nope", "Basic static-admin-token-123456", "Bearer a.b.c"} {
		if _, err := a.Authenticate(req(h)); !errors.Is(err, operatorauth.ErrUnauthenticated) {
			t.Errorf("%q: got %v, want ErrUnauthenticated", h, err)
		}
	}

	tests := []struct {
		role      operatorauth.Role
		method    string
		adminOnly bool
		want      bool
	}{
		{operatorauth.RoleAdmin, http.MethodDelete, true, true},
		{operatorauth.RoleOperator, http.MethodDelete, false, true},
		{operatorauth.RoleOperator, http.MethodPost, true, false},
		{operatorauth.RoleReader, http.MethodGet, false, true},
		{operatorauth.RoleReader, http.MethodPost, false, false},
		{operatorauth.RoleReader, http.MethodGet, true, false},
		{"", http.MethodGet, false, false},
	}
	for _, tc := range tests {
		name := strings.Join([]string{string(tc.role), tc.method}, " ")
		if got := operatorauth.Allow(tc.role, tc.method, tc.adminOnly) == nil; got != tc.want {
			t.Errorf("%s adminOnly=%v: got %v, want %v", name, tc.adminOnly, got, tc.want)
		}
	}
}
