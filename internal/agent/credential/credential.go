// Package credential loads the device's own credential (an ES256 or Ed25519 private key,
// or the HS256 secret tokensvc issued) and signs the short-lived assertions GET /token
// takes. The credential file must be readable by its owner only.
package credential

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Errors returned by Load.
var (
	// ErrPermissions means the credential file is accessible to group or others.
	ErrPermissions = errors.New("credential file must not be accessible by group or others (chmod 600)")
	// ErrFormat means the file holds nothing usable for the requested type.
	ErrFormat = errors.New("unusable credential")
)

// Type is the credential type; it pins the JWT algorithm exactly as tokensvc does.
type Type string

// Credential types.
const (
	// Auto picks HS256 for a file that is not PEM and ES256/EdDSA from a PEM key.
	Auto  Type = "auto"
	HS256 Type = "hs256"
	ES256 Type = "es256"
	EdDSA Type = "eddsa"
)

// Lifetime is how long an assertion is valid: well under tokensvc's 5-minute limit.
const Lifetime = 2 * time.Minute

// Credential signs assertions for one device. It never exposes its key.
type Credential struct {
	typ    Type
	method jwt.SigningMethod
	key    any
}

// Type reports the credential's (resolved) type.
func (c *Credential) Type() Type { return c.typ }

// Load reads the credential in path. want is the expected type, or Auto. The file must
// not be readable or writable by group or others.
func Load(path string, want Type) (*Credential, error) {
	b, err := ReadPrivate(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b, want)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ReadPrivate reads a file that holds a secret, refusing one accessible by group or
// others (ErrPermissions).
func ReadPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credential file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v: %w", path, fi.Mode().Perm(), ErrPermissions)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credential file: %w", err)
	}
	return b, nil
}

// Parse builds a credential from file contents: a PEM private key (PKCS#8, or SEC 1 "EC
// PRIVATE KEY") or the HS256 secret text exactly as tokensvc returned it (surrounding
// whitespace is ignored). Error messages never quote the contents.
func Parse(b []byte, want Type) (*Credential, error) {
	if want == "" {
		want = Auto
	}
	block, _ := pem.Decode(b)
	if block == nil {
		if want != Auto && want != HS256 {
			return nil, fmt.Errorf("%w: %s needs a PEM private key", ErrFormat, want)
		}
		secret := bytes.TrimSpace(b)
		if len(secret) < 16 {
			return nil, fmt.Errorf("%w: HS256 secret shorter than 16 bytes", ErrFormat)
		}
		return &Credential{typ: HS256, method: jwt.SigningMethodHS256, key: secret}, nil
	}
	key, err := ParsePrivateKey(block)
	if err != nil {
		return nil, err
	}
	var c *Credential
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ES256 needs a P-256 key", ErrFormat)
		}
		c = &Credential{typ: ES256, method: jwt.SigningMethodES256, key: k}
	case ed25519.PrivateKey:
		c = &Credential{typ: EdDSA, method: jwt.SigningMethodEdDSA, key: k}
	default:
		return nil, fmt.Errorf("%w: unsupported private key type %T", ErrFormat, key)
	}
	if want != Auto && want != c.typ {
		return nil, fmt.Errorf("%w: file holds an %s key, configured type is %s", ErrFormat, c.typ, want)
	}
	return c, nil
}

// ParsePrivateKey parses a PEM private key block: PKCS#8, SEC 1 ("EC PRIVATE KEY") or
// PKCS#1 ("RSA PRIVATE KEY"). Errors wrap ErrFormat and never quote the contents.
func ParsePrivateKey(block *pem.Block) (any, error) {
	key, err := domain.ParsePrivateKey(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return key, nil
}

// Assertion returns a JWT proving deviceID to audience: iss = sub = deviceID, iat = now,
// exp = now + Lifetime and a random jti. now must be the service's time as best known
// (the caller corrects the device clock with the service's).
func (c *Credential) Assertion(deviceID, audience string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims := jwt.RegisteredClaims{
		Issuer:    deviceID,
		Subject:   deviceID,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(Lifetime)),
		ID:        hex.EncodeToString(jti[:]),
	}
	s, err := jwt.NewWithClaims(c.method, claims).SignedString(c.key)
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	return s, nil
}

// nonceClaims are the claims of an assertion for a device without a trusted clock: the
// service's nonce stands in for iat, exp and jti.
type nonceClaims struct {
	jwt.RegisteredClaims
	Nonce string `json:"nonce"`
}

// NonceAssertion returns a JWT proving deviceID to audience with a nonce from POST
// /token/nonce: iss = sub = deviceID, aud and nonce, and no time claims, so the device
// clock plays no part.
func (c *Credential) NonceAssertion(deviceID, audience, nonce string) (string, error) {
	if nonce == "" {
		return "", errors.New("sign assertion: empty nonce")
	}
	claims := nonceClaims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: deviceID, Subject: deviceID, Audience: jwt.ClaimStrings{audience}},
		Nonce:            nonce,
	}
	s, err := jwt.NewWithClaims(c.method, claims).SignedString(c.key)
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	return s, nil
}
