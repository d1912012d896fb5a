// Package deviceauth verifies the assertions devices present on GET /token: a short-lived
// JWT signed with the device's own credential, algorithm pinned to that credential,
// audience checked, lifetime bounded and jti usable once — or, for devices without a
// clock, a single-use server nonce in place of the times. Nonces are self-verifying
// (MAC'd under NonceKeys, shared by replicas through the store), so any replica accepts
// one another issued. Single use is a ReplayStore's job: this process's memory
// (MemoryReplay, kept across restarts with Restore and Save) or a store every replica
// shares (WithReplayStore). Assertions older than the device's revocation are refused.
// Devices with a certificate credential present a TLS client certificate instead
// (VerifyCert).
package deviceauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// ErrUnauthenticated means the assertion did not prove the device's identity. Callers
// must not tell the client why: unknown, disabled and wrongly signed look the same.
var ErrUnauthenticated = errors.New("device authentication failed")

// Limits on assertions.
const (
	// MaxLifetime is the longest exp - iat accepted.
	MaxLifetime = 5 * time.Minute
	// Leeway absorbs clock skew between device and service.
	Leeway = 30 * time.Second
	// MaxAssertionBytes bounds what is parsed at all.
	MaxAssertionBytes = 4096
	maxJTI            = 128
	maxNonce          = 64
)

// DeviceGetter is the part of the store the verifier reads.
type DeviceGetter interface {
	GetDevice(ctx context.Context, id string) (domain.Device, error)
}

// Verifier checks device assertions.
type Verifier struct {
	devices   DeviceGetter
	audience  string
	now       func() time.Time
	validator *jwt.Validator
	// replay consumes jtis and nonces; mem is the same store when it is this
	// process's memory (saved by Save, restored by Restore), nil when shared.
	replay ReplayStore
	mem    *MemoryReplay
	nonces *NonceKeys
	// clientCA issues the certificates of x509-ca devices; nil accepts none (cert.go).
	clientCA *x509.CertPool
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithNonceKeys tags and checks nonces with keys, shared with other replicas through
// the store (NewNonceKeys, loaded). Without it the verifier makes a key of its own
// (NewEphemeralNonceKeys): its nonces are good on this process only.
func WithNonceKeys(keys *NonceKeys) Option {
	return func(v *Verifier) { v.nonces = keys }
}

// NewVerifier returns a Verifier that looks devices up in devices and accepts assertions
// for audience; now defaults to time.Now.
func NewVerifier(devices DeviceGetter, audience string, now func() time.Time, opts ...Option) *Verifier {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{
		devices:  devices,
		audience: audience,
		now:      now,
		validator: jwt.NewValidator(
			jwt.WithAudience(audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
			jwt.WithTimeFunc(now),
		),
	}
	v.mem = NewMemoryReplay(now)
	v.replay = v.mem
	for _, o := range opts {
		o(v)
	}
	if v.nonces == nil {
		v.nonces = NewEphemeralNonceKeys(now)
	}
	return v
}

// Verify checks assertion and returns the device it proves. It returns an error wrapping
// ErrUnauthenticated for every failure of proof, and store.ErrUnavailable (wrapped) when
// the device could not be looked up or the shared replay store could not say whether
// the jti or nonce is fresh (fail closed).
//
// An assertion without a nonce claim needs aud, iat, exp (at most MaxLifetime after iat,
// both within Leeway of the service clock) and a jti not used before. One with a nonce
// claim needs aud and a nonce tagged by a key of the ring (this replica or another
// issued it), unexpired and unused; its iat, exp and jti are not read, because a device
// without a clock cannot set them.
func (v *Verifier) Verify(ctx context.Context, assertion string) (domain.Device, error) {
	if len(assertion) > MaxAssertionBytes {
		return domain.Device{}, fmt.Errorf("%w: assertion longer than %d bytes", ErrUnauthenticated, MaxAssertionBytes)
	}
	var (
		dev       domain.Device
		lookupErr error
	)
	// The signature and the algorithm only (compact.go); which claims must hold depends
	// on whether the assertion carries a nonce (below).
	var c claims
	err := checkAssertion(assertion, &c, func(method jwt.SigningMethod, crit bool) (any, error) {
		if crit {
			// RFC 7515 §4.1.11: a recipient must refuse a JWS whose crit names an
			// extension it does not implement, and this service implements none.
			return nil, errors.New("crit header names extensions this service does not implement")
		}
		sub := c.Subject
		if !domain.ValidID(sub) {
			return nil, errors.New("sub is not a device ID")
		}
		d, err := v.devices.GetDevice(ctx, sub)
		if err != nil {
			lookupErr = err
			return nil, err
		}
		want, ok := d.Auth.Type.Algorithm()
		if !ok {
			// x509 and x509-ca devices authenticate by certificate only.
			return nil, fmt.Errorf("credential %q does not sign assertions", d.Auth.Type)
		}
		if method.Alg() != want {
			return nil, fmt.Errorf("alg %q, credential needs %q", method.Alg(), want)
		}
		dev = d
		switch d.Auth.Type {
		case domain.CredHS256:
			return d.Auth.Secret, nil
		default:
			return domain.ParsePublicKey(d.Auth.Type, d.Auth.PublicKey)
		}
	})
	if lookupErr != nil && !errors.Is(lookupErr, store.ErrNotFound) {
		return domain.Device{}, fmt.Errorf("look up device: %w", lookupErr)
	}
	if err != nil {
		return domain.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if c.Issuer != c.Subject {
		return domain.Device{}, fmt.Errorf("%w: iss differs from sub", ErrUnauthenticated)
	}
	if c.Nonce != "" {
		return v.verifyNonce(ctx, dev, &c)
	}
	if err := v.validator.Validate(&c); err != nil {
		return domain.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if c.IssuedAt == nil {
		return domain.Device{}, fmt.Errorf("%w: iat missing", ErrUnauthenticated)
	}
	iat, exp := c.IssuedAt.Time, c.ExpiresAt.Time
	if exp.Sub(iat) > MaxLifetime {
		return domain.Device{}, fmt.Errorf("%w: exp more than %v after iat", ErrUnauthenticated, MaxLifetime)
	}
	if c.ID == "" || len(c.ID) > maxJTI {
		return domain.Device{}, fmt.Errorf("%w: jti missing or longer than %d", ErrUnauthenticated, maxJTI)
	}
	if dev.Disabled {
		return domain.Device{}, fmt.Errorf("%w: device disabled", ErrUnauthenticated)
	}
	if iat.Before(dev.RevokedAt) {
		return domain.Device{}, fmt.Errorf("%w: assertion issued before the device was revoked", ErrUnauthenticated)
	}
	// Only a fully valid assertion consumes its jti, so garbage cannot burn a device's IDs.
	if err := v.consume(ctx, dev.ID+"\x00"+c.ID, iat, exp.Add(Leeway)); err != nil {
		return domain.Device{}, err
	}
	return dev, nil
}

// consume marks id used until expiry; issued is when the assertion or nonce says it
// was made, checked against the crash cut-off of the process memory.
func (v *Verifier) consume(ctx context.Context, id string, issued, expiry time.Time) error {
	if v.mem != nil && v.mem.issuedTooEarly(issued) {
		return fmt.Errorf("%w: %v", ErrUnauthenticated, errQuiescent)
	}
	fresh, err := v.replay.Consume(ctx, id, expiry)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("replay store: %w", err)
	case err != nil:
		return fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	case !fresh:
		return fmt.Errorf("%w: %v", ErrUnauthenticated, errReplayed)
	}
	return nil
}

// verifyNonce finishes an assertion that carries a nonce: the signature, algorithm and
// iss = sub already hold.
func (v *Verifier) verifyNonce(ctx context.Context, dev domain.Device, c *claims) (domain.Device, error) {
	if !slices.Contains(c.Audience, v.audience) {
		return domain.Device{}, fmt.Errorf("%w: aud does not name this service", ErrUnauthenticated)
	}
	if len(c.Nonce) > maxNonce {
		return domain.Device{}, fmt.Errorf("%w: nonce longer than %d", ErrUnauthenticated, maxNonce)
	}
	if dev.Disabled {
		return domain.Device{}, fmt.Errorf("%w: device disabled", ErrUnauthenticated)
	}
	n, err := openNonce(c.Nonce)
	if err != nil {
		return domain.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	key, ok := v.nonces.lookup(ctx, n.kid)
	if !ok {
		return domain.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, errNonceKey)
	}
	if err := n.verify(key, dev.RevokedAt, v.now()); err != nil {
		return domain.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	// The nonce is consumed only when every other check has passed. Its key starts
	// with NUL, which no device ID (and so no jti key) does. Its issue time is read by
	// a service clock, not a device's, so the crash cut-off (restart + Leeway, the
	// allowance for device clocks) applies less Leeway: a nonce issued after the
	// restart is good at once. It is remembered Leeway past its lifetime, as a jti is,
	// so replicas whose clocks differ by less than that cannot reopen its window.
	if err := v.consume(ctx, "\x00nonce\x00"+c.Nonce, n.issued.Add(Leeway), n.issued.Add(NonceTTL+Leeway)); err != nil {
		return domain.Device{}, err
	}
	return dev, nil
}

// IssueNonce returns a fresh single-use nonce and when it expires. The nonce carries its
// issue time and a MAC, so nothing is remembered until it is used.
func (v *Verifier) IssueNonce() (nonce string, expiresAt time.Time) {
	now := v.now()
	k := v.nonces.signing()
	nonce = sealNonce(k.ID, k.Key, now)
	// The nonce holds milliseconds; report the expiry it will be judged by.
	return nonce, time.UnixMilli(now.UnixMilli()).Add(NonceTTL)
}
