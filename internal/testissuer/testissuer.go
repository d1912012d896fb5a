// Package testissuer is an in-process stand-in for the service's issuer key ring, for
// tests: real RSA (RS256) and ECDSA P-256 (ES256) keys in memory, JWTs signed with
// golang-jwt, rotation and retirement, and the public halves as a JWKS document and PEM,
// served over HTTP when a test needs it (Serve). It implements target.IssuerSigner. Only
// tests import it: the AWS authorizer's, the awsiot and jwtbroker kinds' and the JWT
// broker peer's.
package testissuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/target"
)

// Issuer holds keys by kid; the one last rotated in for an algorithm signs, published
// or not (Unpublish makes a key the brokers no longer know).
type Issuer struct {
	url string

	mu        sync.Mutex
	keys      map[string]crypto.Signer
	order     []string          // kids, oldest first
	current   map[string]string // alg -> kid that signs
	published map[string]bool
	n         int
	fetches   atomic.Int64
}

var _ target.IssuerSigner = (*Issuer)(nil)

// New returns an Issuer named url with one RSA 2048 and one P-256 key.
func New(tb testing.TB, url string) *Issuer {
	tb.Helper()
	i := &Issuer{url: url, keys: map[string]crypto.Signer{}, current: map[string]string{}, published: map[string]bool{}}
	i.Rotate(tb, "RS256")
	i.Rotate(tb, "ES256")
	return i
}

// Serve returns an Issuer whose URL (its iss) is a loopback HTTP server serving its
// JWKS at every path, /.well-known/jwks.json included; the server stops when the test
// ends.
func Serve(tb testing.TB) *Issuer {
	tb.Helper()
	var i *Issuer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { i.ServeHTTP(w, r) }))
	tb.Cleanup(srv.Close)
	i = New(tb, srv.URL)
	return i
}

// JWKSURL is where Serve's server publishes the key set.
func (i *Issuer) JWKSURL() string { return i.url + "/.well-known/jwks.json" }

// Issuer implements target.IssuerSigner.
func (i *Issuer) Issuer() string { return i.url }

// Rotate adds a new key for alg, published and signing from now on; it returns its kid.
func (i *Issuer) Rotate(tb testing.TB, alg string) string {
	tb.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		tb.Fatalf("testissuer: no algorithm %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.n++
	var tag [4]byte
	_, _ = rand.Read(tag[:]) // kids unique across issuers: a foreign key is unknown, not a clash
	kid := fmt.Sprintf("%s-%d-%x", alg, i.n, tag)
	i.keys[kid] = k
	i.order = append(i.order, kid)
	i.current[alg] = kid
	i.published[kid] = true
	return kid
}

// Unpublish removes kid from the published keys; it keeps its key, so tests can still
// sign with it through SignWith, and it still signs if it is current (a key the brokers
// no longer know).
func (i *Issuer) Unpublish(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.published, kid)
}

// Current returns the kid that signs for alg.
func (i *Issuer) Current(alg string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current[alg]
}

// Fetches counts the key sets served over HTTP.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// SignJWT implements target.IssuerSigner.
func (i *Issuer) SignJWT(_ context.Context, alg string, claims any) (string, string, error) {
	kid := i.Current(alg)
	if kid == "" {
		return "", "", fmt.Errorf("testissuer: no key for %s", alg)
	}
	tok, err := i.SignWith(kid, nil, claims)
	return tok, kid, err
}

// SignWith signs claims with key kid (published or not), with header fields extra
// added (or overriding alg, typ, kid).
func (i *Issuer) SignWith(kid string, extra map[string]any, claims any) (string, error) {
	i.mu.Lock()
	k := i.keys[kid]
	i.mu.Unlock()
	if k == nil {
		return "", fmt.Errorf("testissuer: no key %q", kid)
	}
	alg := algOf(k)
	header := map[string]any{"alg": alg, "typ": "JWT", "kid": kid}
	for name, v := range extra {
		header[name] = v
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sig, err := jwt.GetSigningMethod(alg).Sign(signing, k)
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// SignPKCS1 implements target.IssuerSigner.
func (i *Issuer) SignPKCS1(_ context.Context, kid string, msg []byte) ([]byte, error) {
	i.mu.Lock()
	k, ok := i.keys[kid].(*rsa.PrivateKey)
	i.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("testissuer: %q is not an RSA key", kid)
	}
	sum := sha256.Sum256(msg)
	return rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:])
}

// Public returns kid's public key.
func (i *Issuer) Public(kid string) crypto.PublicKey {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[kid].Public()
}

// PublicPEM returns kid's public key as a PEM "PUBLIC KEY" block (what AWS's
// create-authorizer takes as a token-signing public key).
func (i *Issuer) PublicPEM(kid string) string {
	der, err := x509.MarshalPKIXPublicKey(i.Public(kid))
	if err != nil {
		panic(err) // RSA and ECDSA keys always marshal
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// JWKS returns the published keys as a JWK Set document.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	type jwk struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		Alg string `json:"alg"`
		N   string `json:"n,omitempty"`
		E   string `json:"e,omitempty"`
		Crv string `json:"crv,omitempty"`
		X   string `json:"x,omitempty"`
		Y   string `json:"y,omitempty"`
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	b64 := base64.RawURLEncoding.EncodeToString
	for _, kid := range i.order {
		if !i.published[kid] {
			continue
		}
		switch k := i.keys[kid].(type) {
		case *rsa.PrivateKey:
			set.Keys = append(set.Keys, jwk{Kty: "RSA", Kid: kid, Use: "sig", Alg: "RS256",
				N: b64(k.N.Bytes()), E: b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PrivateKey:
			pub, err := k.PublicKey.Bytes() // uncompressed point 04 || X || Y
			if err != nil {
				panic(err)
			}
			set.Keys = append(set.Keys, jwk{Kty: "EC", Kid: kid, Use: "sig", Alg: "ES256", Crv: "P-256",
				X: b64(pub[1:33]), Y: b64(pub[33:])})
		}
	}
	b, _ := json.Marshal(set)
	return b
}

// ServeHTTP serves JWKS() at any path, as GET /.well-known/jwks.json does.
func (i *Issuer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	i.fetches.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(i.JWKS())
}

func algOf(k crypto.Signer) string {
	if _, ok := k.(*rsa.PrivateKey); ok {
		return "RS256"
	}
	return "ES256"
}
