// Package deviceauth verifies the assertions devices present on GET /token: a short-lived
// JWT signed with the device's own credential, algorithm pinned to that credential,
// audience checked, lifetime bounded and jti usable once.
package deviceauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
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
)

// DeviceGetter is the part of the store the verifier reads.
type DeviceGetter interface {
	GetDevice(ctx context.Context, id string) (store.Device, error)
}

// Verifier checks device assertions.
type Verifier struct {
	devices  DeviceGetter
	audience string
	now      func() time.Time
	parser   *jwt.Parser
	replay   *replayCache
}

// NewVerifier returns a Verifier that looks devices up in devices and accepts assertions
// for audience; now defaults to time.Now.
func NewVerifier(devices DeviceGetter, audience string, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		devices:  devices,
		audience: audience,
		now:      now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"HS256", "ES256", "EdDSA"}),
			jwt.WithAudience(audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
			jwt.WithTimeFunc(now),
			// Reject non-canonical base64, so one signature has exactly one spelling.
			jwt.WithStrictDecoding(),
		),
		replay: newReplayCache(),
	}
}

// algFor pins each credential type to exactly one algorithm, so an HS256 token can never
// be checked with a public key as its secret, nor "none" accepted.
var algFor = map[store.CredentialType]string{
	store.CredHS256: "HS256",
	store.CredES256: "ES256",
	store.CredEdDSA: "EdDSA",
}

// Verify checks assertion and returns the device it proves. It returns an error wrapping
// ErrUnauthenticated for every failure of proof, and store.ErrUnavailable (wrapped) when
// the device could not be looked up.
func (v *Verifier) Verify(ctx context.Context, assertion string) (store.Device, error) {
	if len(assertion) > MaxAssertionBytes {
		return store.Device{}, fmt.Errorf("%w: assertion longer than %d bytes", ErrUnauthenticated, MaxAssertionBytes)
	}
	var (
		dev       store.Device
		lookupErr error
	)
	claims := &jwt.RegisteredClaims{}
	_, err := v.parser.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		sub := claims.Subject
		if !signer.ValidID(sub) {
			return nil, errors.New("sub is not a device ID")
		}
		d, err := v.devices.GetDevice(ctx, sub)
		if err != nil {
			lookupErr = err
			return nil, err
		}
		if want := algFor[d.Auth.Type]; t.Method.Alg() != want {
			return nil, fmt.Errorf("alg %q, credential needs %q", t.Method.Alg(), want)
		}
		dev = d
		switch d.Auth.Type {
		case store.CredHS256:
			return d.Auth.Secret, nil
		default:
			return registry.ParsePublicKey(d.Auth.Type, d.Auth.PublicKey)
		}
	})
	if lookupErr != nil && !errors.Is(lookupErr, store.ErrNotFound) {
		return store.Device{}, fmt.Errorf("look up device: %w", lookupErr)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if claims.Issuer != claims.Subject {
		return store.Device{}, fmt.Errorf("%w: iss differs from sub", ErrUnauthenticated)
	}
	if claims.IssuedAt == nil {
		return store.Device{}, fmt.Errorf("%w: iat missing", ErrUnauthenticated)
	}
	exp := claims.ExpiresAt.Time
	if exp.Sub(claims.IssuedAt.Time) > MaxLifetime {
		return store.Device{}, fmt.Errorf("%w: exp more than %v after iat", ErrUnauthenticated, MaxLifetime)
	}
	if claims.ID == "" || len(claims.ID) > maxJTI {
		return store.Device{}, fmt.Errorf("%w: jti missing or longer than %d", ErrUnauthenticated, maxJTI)
	}
	if dev.Disabled {
		return store.Device{}, fmt.Errorf("%w: device disabled", ErrUnauthenticated)
	}
	// Only a fully valid assertion consumes its jti, so garbage cannot burn a device's IDs.
	if !v.replay.use(dev.ID+"\x00"+claims.ID, exp.Add(Leeway), v.now()) {
		return store.Device{}, fmt.Errorf("%w: jti replayed", ErrUnauthenticated)
	}
	return dev, nil
}

// replayCache remembers used jti values until their assertion could no longer be
// accepted anyway. It lives in memory: see the README's security model for restarts
// and replicas.
type replayCache struct {
	mu        sync.Mutex
	seen      map[string]time.Time
	nextSweep time.Time
}

func newReplayCache() *replayCache {
	return &replayCache{seen: make(map[string]time.Time)}
}

// use records key until 'until' and reports whether it was unused.
func (c *replayCache) use(key string, until, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.nextSweep) {
		for k, t := range c.seen {
			if now.After(t) {
				delete(c.seen, k)
			}
		}
		c.nextSweep = now.Add(time.Minute)
	}
	if t, ok := c.seen[key]; ok && !now.After(t) {
		return false
	}
	c.seen[key] = until
	return true
}
