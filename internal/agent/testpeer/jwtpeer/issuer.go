package jwtpeer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/target"
)

// Issuer is an in-process issuer key ring for tests: ES256 and RS256 keys held in
// memory, signing as target.IssuerSigner does, and their public halves served as a JWKS
// over HTTP. A key can be rotated (a new one signs) and unpublished (dropped from the
// JWKS), as the service's real key ring does over time.
type Issuer struct {
	// URL is the issuer (iss); JWKSURL serves the published keys.
	URL, JWKSURL string

	mu      sync.Mutex
	keys    map[string]crypto.Signer // by kid
	current map[string]string        // alg -> kid that signs
	hidden  map[string]bool          // unpublished kids
	n       int
	fetches atomic.Int64
}

var _ target.IssuerSigner = (*Issuer)(nil)

// NewIssuer starts an issuer with one ES256 and one RS256 key; its JWKS endpoint stops
// when the test ends.
func NewIssuer(tb testing.TB) *Issuer {
	tb.Helper()
	i := &Issuer{keys: map[string]crypto.Signer{}, current: map[string]string{}, hidden: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(i.serveJWKS))
	tb.Cleanup(srv.Close)
	i.URL = srv.URL
	i.JWKSURL = srv.URL + "/.well-known/jwks.json"
	i.Rotate(tb, "ES256")
	i.Rotate(tb, "RS256")
	return i
}

// Rotate creates a new key for alg that signs from now on; the old one stays published.
// It returns the new kid.
func (i *Issuer) Rotate(tb testing.TB, alg string) string {
	tb.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		tb.Fatalf("jwtpeer: no algorithm %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.n++
	var tag [4]byte
	_, _ = rand.Read(tag[:]) // kids unique across issuers, so a foreign key is unknown, not a clash
	kid := alg + "-" + strconv.Itoa(i.n) + "-" + hex.EncodeToString(tag[:])
	i.keys[kid] = k
	i.current[alg] = kid
	return kid
}

// Unpublish drops kid from the JWKS; it keeps signing if it is current (a key the
// broker no longer knows).
func (i *Issuer) Unpublish(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.hidden[kid] = true
}

// Current returns the kid that signs for alg.
func (i *Issuer) Current(alg string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current[alg]
}

// Fetches counts the JWKS responses served.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// Issuer implements target.IssuerSigner.
func (i *Issuer) Issuer() string { return i.URL }

// SignJWT implements target.IssuerSigner.
func (i *Issuer) SignJWT(_ context.Context, alg string, claims any) (string, string, error) {
	kid := i.Current(alg)
	if kid == "" {
		return "", "", fmt.Errorf("jwtpeer: no %s key", alg)
	}
	tok, err := i.SignWith(kid, claims)
	return tok, kid, err
}

// SignWith signs claims (anything that marshals to a JSON object) with key kid.
func (i *Issuer) SignWith(kid string, claims any) (string, error) {
	i.mu.Lock()
	k, ok := i.keys[kid]
	i.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("jwtpeer: no key %q", kid)
	}
	var method jwt.SigningMethod = jwt.SigningMethodES256
	if _, isRSA := k.(*rsa.PrivateKey); isRSA {
		method = jwt.SigningMethodRS256
	}
	t := jwt.NewWithClaims(method, anyClaims{claims})
	t.Header["kid"] = kid
	return t.SignedString(k)
}

// SignPKCS1 implements target.IssuerSigner.
func (i *Issuer) SignPKCS1(_ context.Context, kid string, msg []byte) ([]byte, error) {
	i.mu.Lock()
	k, ok := i.keys[kid].(*rsa.PrivateKey)
	i.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("jwtpeer: no RSA key %q", kid)
	}
	sum := sha256.Sum256(msg)
	return rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
}

// serveJWKS writes the published public keys as RFC 7517 JWKs.
func (i *Issuer) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	i.mu.Lock()
	keys := make([]map[string]string, 0, len(i.keys))
	for kid, k := range i.keys {
		if i.hidden[kid] {
			continue
		}
		keys = append(keys, jwk(kid, k.Public()))
	}
	i.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	i.fetches.Add(1)
}

func jwk(kid string, pub crypto.PublicKey) map[string]string {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		pt, _ := p.Bytes() // 0x04 || X || Y for a key this package generated
		return map[string]string{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
			"x": base64.RawURLEncoding.EncodeToString(pt[1:33]), "y": base64.RawURLEncoding.EncodeToString(pt[33:])}
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(p.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(p.E)).Bytes())}
	}
	return nil
}

// anyClaims signs any JSON object as it marshals, numbers and all.
type anyClaims struct{ v any }

func (c anyClaims) MarshalJSON() ([]byte, error)               { return json.Marshal(c.v) }
func (anyClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (anyClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (anyClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (anyClaims) GetIssuer() (string, error)                   { return "", nil }
func (anyClaims) GetSubject() (string, error)                  { return "", nil }
func (anyClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }
