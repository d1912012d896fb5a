package domain

import (
	"crypto"
	"time"
)

// IssuerAlg is the JWS algorithm of an issuer key.
type IssuerAlg string

// Issuer key algorithms: RSA 2048 with PKCS#1 v1.5 SHA-256 (AWS's authorizer signature
// is RSA), and ECDSA P-256 with SHA-256.
const (
	AlgRS256 IssuerAlg = "RS256"
	AlgES256 IssuerAlg = "ES256"
)

// IssuerKeyState is where an issuer key is in its life.
type IssuerKeyState string

// Issuer key states.
const (
	// KeyPending is published but does not sign yet, so every cache of the key set
	// has it before any credential it signs.
	KeyPending IssuerKeyState = "pending"
	// KeyActive signs.
	KeyActive IssuerKeyState = "active"
	// KeyRetired has been replaced; it stays published until PublishedUntil.
	KeyRetired IssuerKeyState = "retired"
)

// IssuerKey is one of the service's issuer keys: its public half and its schedule. The
// private half never leaves the key ring (or Vault Transit).
type IssuerKey struct {
	ID  string // kid
	Alg IssuerAlg
	// Public is an *rsa.PublicKey or *ecdsa.PublicKey.
	Public crypto.PublicKey
	// Certificate is a self-signed certificate (DER) holding Public, for brokers that
	// take a certificate rather than a key (Event Grid namespaces).
	Certificate []byte
	CreatedAt   time.Time
	// SignsFrom is when the key starts signing (publication lead after creation).
	SignsFrom time.Time
	// RetiredAt is when its successor took over signing; zero while it has none.
	RetiredAt time.Time
	// PublishedUntil is when the longest-lived credential it signed has expired; zero
	// while it is not retired.
	PublishedUntil time.Time
	// Transit says the private key lives in Vault Transit.
	Transit bool
}

// State returns the key's state at now.
func (k IssuerKey) State(now time.Time) IssuerKeyState {
	switch {
	case !k.RetiredAt.IsZero() && !now.Before(k.RetiredAt):
		return KeyRetired
	case now.Before(k.SignsFrom):
		return KeyPending
	default:
		return KeyActive
	}
}

// Published says whether the key is still in the published key set at now.
func (k IssuerKey) Published(now time.Time) bool {
	return k.PublishedUntil.IsZero() || now.Before(k.PublishedUntil)
}
