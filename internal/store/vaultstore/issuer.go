package vaultstore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"regexp"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Issuer keys (the keys tokensvc signs JWT credentials with) live in Transit as
// asymmetric keys created there, never exportable: the private key never leaves Vault.
// Their names are {prefix}-i-{kid}; the ring's kids are short path-safe strings.
// Signatures always use key version 1, so rotating the Transit key by hand cannot
// silently change the key behind a published kid (a new issuer key is a new kid).

var kidRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// issuerKeyName names the Transit key of issuer key kid.
func (s *Store) issuerKeyName(kid string) (string, error) {
	if !kidRE.MatchString(kid) {
		return "", fmt.Errorf("issuer key id %q: letters, digits, '-' and '_' only", kid)
	}
	return s.keyPrefix + "-i-" + kid, nil
}

func transitKeyType(alg domain.IssuerAlg) (string, error) {
	switch alg {
	case domain.AlgRS256:
		return "rsa-2048", nil
	case domain.AlgES256:
		return "ecdsa-p256", nil
	}
	return "", fmt.Errorf("issuer key algorithm %q: want RS256 or ES256", alg)
}

// CreateIssuerKey creates the Transit key of issuer key kid (rsa-2048 for RS256,
// ecdsa-p256 for ES256; not exportable) and returns its public key
// (issuerkeys.TransitKeys). Each call is bounded by WriteTimeout; errors wrap
// store.ErrUnavailable when Vault cannot be reached, ErrPermissionDenied when the
// policy lacks the issuer key paths.
func (s *Store) CreateIssuerKey(ctx context.Context, kid string, alg domain.IssuerAlg) (crypto.PublicKey, error) {
	if err := s.live(); err != nil {
		return nil, fmt.Errorf("create issuer key: %w", err)
	}
	name, err := s.issuerKeyName(kid)
	if err != nil {
		return nil, err
	}
	typ, err := transitKeyType(alg)
	if err != nil {
		return nil, err
	}
	path := s.cfg.TransitMount + "/keys/" + name
	if err := s.put(ctx, s.cfg.WriteTimeout, path, []byte(`{"type":"`+typ+`"}`), nil); err != nil {
		return nil, fmt.Errorf("create issuer key %s: %w", name, s.classify(ctx, err, "write", path))
	}
	return s.issuerPublicKey(ctx, name, alg)
}

// issuerPublicKey reads version 1 of Transit key name's public key.
func (s *Store) issuerPublicKey(ctx context.Context, name string, alg domain.IssuerAlg) (crypto.PublicKey, error) {
	var r struct {
		Data struct {
			Keys map[string]json.RawMessage `json:"keys"`
		} `json:"data"`
	}
	path := s.cfg.TransitMount + "/keys/" + name
	if err := s.get(ctx, s.cfg.WriteTimeout, path, nil, &r); err != nil {
		return nil, fmt.Errorf("read issuer key %s: %w", name, err)
	}
	var v1 struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(r.Data.Keys["1"], &v1); err != nil || v1.PublicKey == "" {
		return nil, fmt.Errorf("read issuer key %s: no public key of version 1 in the answer", name)
	}
	block, _ := pem.Decode([]byte(v1.PublicKey))
	if block == nil {
		return nil, fmt.Errorf("read issuer key %s: public key is not PEM", name)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read issuer key %s: %v", name, err)
	}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if alg == domain.AlgRS256 && p.N.BitLen() >= 2048 {
			return p, nil
		}
	case *ecdsa.PublicKey:
		if alg == domain.AlgES256 && p.Curve == elliptic.P256() {
			return p, nil
		}
	}
	return nil, fmt.Errorf("read issuer key %s: a %T does not fit %s", name, pub, alg)
}

// SignIssuerDigest signs a SHA-256 digest inside Transit with version 1 of issuer key
// kid (issuerkeys.TransitKeys): PKCS#1 v1.5 for RS256, r||s (JWS marshaling) for
// ES256. One Vault call bounded by RequestTimeout, as it is on the token path (shared
// with concurrent signatures with the same key when batching is on, see batch.go); errors
// wrap store.ErrNotFound when Transit has no such key and store.ErrUnavailable when
// Vault cannot answer in time.
func (s *Store) SignIssuerDigest(ctx context.Context, kid string, alg domain.IssuerAlg, digest []byte) ([]byte, error) {
	if err := s.live(); err != nil {
		return nil, fmt.Errorf("transit sign: %w", err)
	}
	name, err := s.issuerKeyName(kid)
	if err != nil {
		return nil, err
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("transit sign with %s: digest of %d bytes, want SHA-256", name, len(digest))
	}
	sig, err := do(ctx, s.batch.sign, s.signCall, signKey(name, alg), base64.StdEncoding.EncodeToString(digest))
	if err != nil {
		return nil, fmt.Errorf("transit sign with %s: %w", name, err)
	}
	return sig, nil
}
