// Package target is the seam every kind of target plugs into. A kind (IoT Hub, Event
// Hubs, DPS, …) is one package that implements Kind: it checks a hub's settings, says
// which keys its devices carry, and mints a device's credential with the connection
// profiles to use it. The registry, the token issuer, the HTTP API and the stores know
// no kind-specific rule; they look the kind up in a Set.
//
// Adding a kind: a new package under internal/target implementing Kind, its schema in
// api/openapi.yaml, and one line in package kinds.
package target

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// ErrForbidden means the device may not have what it asked for (e.g. a module that is
// not registered to it, or a module on a kind that has none).
var ErrForbidden = errors.New("forbidden")

// Kind is one kind of target.
type Kind interface {
	// Name is the hub kind this implements, as stored and as the API spells it.
	Name() domain.HubKind
	// Normalize checks the kind-specific settings of h and fills its defaults. It
	// returns an error wrapping domain.ErrInvalid for a rule h breaks.
	Normalize(h *domain.Hub) error
	// PrepareDevice checks a new device against its hub (identifier rules, modules,
	// which keys it may carry) and generates the keys it lacks. It returns an error
	// wrapping domain.ErrInvalid for a rule d breaks.
	PrepareDevice(h domain.Hub, d *domain.Device) error
	// Mint mints the credential for r on hub h. It returns an error wrapping
	// ErrForbidden when the device may not have it, and the signer's errors unchanged.
	Mint(ctx context.Context, s Signers, h domain.Hub, r Request) (Minted, error)
}

// IssuerKeysUser is implemented by kinds whose credentials the service's issuer keys
// sign (JWT kinds): such hubs need a service with an issuer URL.
type IssuerKeysUser interface {
	UsesIssuerKeys() bool
}

// UsesIssuerKeys says whether k's credentials are signed with the issuer keys.
func UsesIssuerKeys(k Kind) bool {
	u, ok := k.(IssuerKeysUser)
	return ok && u.UsesIssuerKeys()
}

// Request is a mint for one authenticated device.
type Request struct {
	Device domain.Device
	// ModuleID asks for a module's credential; "" for the device's own.
	ModuleID string
	// TTL is the lifetime, policy already applied.
	TTL       time.Duration
	Transport signer.Transport
	// Now is the service clock's reading to mint at (iat of a JWT).
	Now time.Time
}

// Minted is a credential with the settings to use it.
type Minted struct {
	Token    signer.Token
	Profiles signer.Profiles
	// TLSServerName and CACert tell the device what to trust.
	TLSServerName string
	CACert        string
	// Signature is a detached signature of Token.Value some targets want beside it
	// (the AWS IoT custom authorizer's token signature, base64); "" when none.
	Signature string
}

// Signers are the signing capabilities a kind may use; each is implemented outside the
// kinds (keys held here or in Vault Transit), so kinds stay free of key storage.
type Signers struct {
	SAS    SASSigner
	Issuer IssuerSigner
}

// IssuerSigner signs with the service's own issuer keys (RS256 / ES256), held encrypted
// in the embedded store or in Vault Transit; it publishes their public halves.
type IssuerSigner interface {
	// Issuer is the service's issuer URL, the iss of every JWT it signs.
	Issuer() string
	// SignJWT returns claims as a compact JWS signed by the issuer key that currently
	// signs for alg ("RS256" or "ES256"); its header carries alg, typ JWT and the key's
	// kid, which is returned too. claims must marshal to a JSON object.
	SignJWT(ctx context.Context, alg string, claims any) (token, kid string, err error)
	// SignPKCS1 returns the RSA PKCS#1 v1.5 SHA-256 signature of msg by the RSA issuer
	// key kid (one SignJWT returned).
	SignPKCS1(ctx context.Context, kid string, msg []byte) ([]byte, error)
}

// SASSigner signs Azure shared access signatures.
type SASSigner interface {
	// SignSAS signs req with the key k names for device d (or its module moduleID) on
	// hub h. It returns store.ErrNotFound / store.ErrUnavailable (wrapped) when a remote
	// key store has no such key or cannot be reached.
	SignSAS(ctx context.Context, h domain.Hub, d domain.Device, moduleID string, k Key, req signer.Request) (signer.Token, error)
}

// Key names the SAS key that signs a token.
type Key int

// Keys a SAS token may be signed with.
const (
	// KeyIdentity is the primary key of the device, or of its module.
	KeyIdentity Key = iota
	// KeyPolicy is the hub's policy key as base64 of its bytes (IoT Hub).
	KeyPolicy
	// KeyPolicyText is the hub's policy key used as its UTF-8 text (Event Hubs).
	KeyPolicyText
	// KeyGroupDerived is base64(HMAC-SHA256(groupKey, deviceID)) of the hub's
	// enrollment-group key (DPS).
	KeyGroupDerived
)

// Set is the kinds a service knows, by name.
type Set struct {
	kinds map[domain.HubKind]Kind
}

// NewSet returns a Set of ks; it panics on two kinds with one name (a wiring mistake).
func NewSet(ks ...Kind) *Set {
	s := &Set{kinds: make(map[domain.HubKind]Kind, len(ks))}
	for _, k := range ks {
		if _, dup := s.kinds[k.Name()]; dup {
			panic(fmt.Sprintf("target: kind %q registered twice", k.Name()))
		}
		s.kinds[k.Name()] = k
	}
	return s
}

// Lookup returns the kind named n. An unknown name is an error wrapping
// domain.ErrInvalid, safe to show the caller.
func (s *Set) Lookup(n domain.HubKind) (Kind, error) {
	k, ok := s.kinds[n]
	if !ok {
		return nil, domain.Invalid("unknown hub kind %q; this service serves %v", n, s.Names())
	}
	return k, nil
}

// Names returns the known kind names, sorted.
func (s *Set) Names() []domain.HubKind {
	names := make([]domain.HubKind, 0, len(s.kinds))
	for n := range s.kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
