// Package adminauth checks operator bearer tokens. Only a SHA-256 hash of the admin token
// is ever kept; comparison is constant-time.
package adminauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tokensvc/tokensvc/internal/store"
)

// SettingName is the store setting that holds the generated admin token's hash.
const SettingName = "admin-token-sha256"

// tokenPrefix makes admin tokens recognisable to secret scanners.
const tokenPrefix = "tsa_"

// Settings is the part of the store bootstrap needs.
type Settings interface {
	GetSetting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
	CreateSetting(ctx context.Context, name string, value []byte) error
}

// Authenticator checks admin tokens against a stored hash. The hash can be replaced or
// revoked while the service runs; it is safe for concurrent use.
type Authenticator struct {
	hash atomic.Pointer[[sha256.Size]byte]
}

func newAuthenticator(hash [sha256.Size]byte) *Authenticator {
	a := &Authenticator{}
	a.hash.Store(&hash)
	return a
}

// Check reports whether token is the admin token.
func (a *Authenticator) Check(token string) bool {
	want := a.hash.Load()
	if want == nil || token == "" {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], want[:]) == 1
}

// Replace makes the token whose SHA-256 is hash the admin token, at once; the old one
// stops working. Persisting the new hash (the SettingName setting) is the caller's job.
func (a *Authenticator) Replace(hash [sha256.Size]byte) {
	a.hash.Store(&hash)
}

// Revoke makes Check refuse every token until Replace.
func (a *Authenticator) Revoke() {
	a.hash.Store(nil)
}

// Bootstrap returns the Authenticator for explicit when it is set, and stores its hash in
// place of the one an earlier start stored: a generated token, printed once on stdout,
// must not come back if the variable is unset later (the explicit token stays the admin
// token then). Without explicit it uses the hash stored by an earlier start, or
// generates a token, stores its hash and returns the token as generated so the caller
// can show it once. Replicas starting together on one store agree on one token: the
// hash is stored only if none is, and a replica that loses that race uses the
// winner's hash and shows nothing (the winner shows the token).
func Bootstrap(ctx context.Context, s Settings, explicit string) (a *Authenticator, generated string, err error) {
	if explicit != "" {
		hash := sha256.Sum256([]byte(explicit))
		stored, err := s.GetSetting(ctx, SettingName)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, "", fmt.Errorf("read admin token hash: %w", err)
		}
		if subtle.ConstantTimeCompare(stored, hash[:]) != 1 {
			if err := s.PutSetting(ctx, SettingName, hash[:]); err != nil {
				return nil, "", fmt.Errorf("store admin token hash: %w", err)
			}
		}
		return newAuthenticator(hash), "", nil
	}
	a, err = stored(ctx, s)
	if !errors.Is(err, store.ErrNotFound) {
		return a, "", err
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	generated = tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	hash := sha256.Sum256([]byte(generated))
	switch err := s.CreateSetting(ctx, SettingName, hash[:]); {
	case errors.Is(err, store.ErrExists):
		a, err = stored(ctx, s)
		return a, "", err
	case err != nil:
		return nil, "", fmt.Errorf("store admin token hash: %w", err)
	}
	return newAuthenticator(hash), generated, nil
}

// stored returns the Authenticator for the stored hash; store.ErrNotFound (unwrapped
// by errors.Is) when there is none.
func stored(ctx context.Context, s Settings) (*Authenticator, error) {
	h, err := s.GetSetting(ctx, SettingName)
	if err != nil {
		return nil, fmt.Errorf("read admin token hash: %w", err)
	}
	if len(h) != sha256.Size {
		return nil, fmt.Errorf("stored admin token hash has %d bytes, want %d", len(h), sha256.Size)
	}
	return newAuthenticator([sha256.Size]byte(h)), nil
}
