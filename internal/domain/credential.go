package domain

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// Algorithm returns the one JWT algorithm a credential type's assertions must use, and
// false for certificate credentials, which no assertion ever authenticates. Pinning
// one algorithm per type means an HS256 token can never be checked with a public key
// as its secret, nor "none" accepted.
func (t CredentialType) Algorithm() (string, bool) {
	switch t {
	case CredHS256:
		return "HS256", true
	case CredES256:
		return "ES256", true
	case CredEdDSA:
		return "EdDSA", true
	}
	return "", false
}

// Prepare checks c for a new device and fills in what is generated: for hs256 a fresh
// secret, returned (it is shown once) and kept in c.Secret. Other types keep no secret.
// It returns an error wrapping ErrInvalid when c breaks a rule.
func (c *Credential) Prepare() (secret string, err error) {
	if c.CertFingerprint != "" && c.Type != CredX509 {
		return "", Invalid("only an x509 credential takes a certFingerprint")
	}
	switch c.Type {
	case CredHS256:
		if c.PublicKey != "" {
			return "", Invalid("an hs256 credential takes no publicKey")
		}
		secret = NewSecret()
		c.Secret = []byte(secret)
		return secret, nil
	case CredES256, CredEdDSA:
		if _, err := ParsePublicKey(c.Type, c.PublicKey); err != nil {
			return "", Invalid("auth.publicKey: %v", err)
		}
	case CredX509, CredX509CA:
		// Accepted whether or not this process has mutual TLS or a client CA configured:
		// the record outlives the configuration, and without it the device is simply
		// never authenticated (README, security model).
		if c.PublicKey != "" {
			return "", Invalid("an %s credential takes no publicKey", c.Type)
		}
		if c.Type == CredX509 && !ValidFingerprint(c.CertFingerprint) {
			return "", Invalid("an x509 credential needs certFingerprint, the SHA-256 of the certificate's DER encoding as 64 lowercase hex digits")
		}
	default:
		return "", Invalid("unknown credential type %q", c.Type)
	}
	c.Secret = nil
	return "", nil
}

// NewSecret returns a fresh HS256 device secret: 256 bits, base64url without padding.
// Devices use the secret's text as the HMAC key, so it must travel intact.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// CertFingerprint returns the fingerprint an x509 credential pins: the lowercase hex
// SHA-256 of the certificate's DER encoding.
func CertFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ValidFingerprint reports whether s has the form CertFingerprint returns.
func ValidFingerprint(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ParsePublicKey parses a PEM public key and checks it fits the credential type: a P-256
// ECDSA key for es256, an Ed25519 key for eddsa.
func ParsePublicKey(t CredentialType, pemText string) (any, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKIX public key")
	}
	switch t {
	case CredES256:
		if k, ok := key.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
			return k, nil
		}
		return nil, errors.New("es256 needs an ECDSA P-256 public key")
	case CredEdDSA:
		if k, ok := key.(ed25519.PublicKey); ok {
			return k, nil
		}
		return nil, errors.New("eddsa needs an Ed25519 public key")
	}
	return nil, fmt.Errorf("credential type %q has no public key", t)
}
