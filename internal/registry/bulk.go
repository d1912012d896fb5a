package registry

import (
	"context"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// ImportResult says what importing one device did.
type ImportResult string

// Import results.
const (
	// Imported means the device was created; its generated secrets are in the Created.
	Imported ImportResult = "created"
	// Skipped means an identical device exists already; nothing changed.
	Skipped ImportResult = "skipped"
	// Rejected means the device is invalid or conflicts with an existing one; nothing changed.
	Rejected ImportResult = "rejected"
)

// ImportDevice creates d unless a device with its ID exists. An existing device that
// matches d on everything d states (hub, credential, supplied keys, modules, disabled,
// maxTtl, gateway, parent) is Skipped, so importing the same file twice changes nothing; one that differs
// is Rejected with the reason. A Rejected error is safe to show the caller; any other
// error (e.g. the store is unavailable) is returned as is.
func (r *Registry) ImportDevice(ctx context.Context, d domain.Device) (Created, ImportResult, error) {
	return r.importDevice(ctx, d, true)
}

func (r *Registry) importDevice(ctx context.Context, d domain.Device, retry bool) (Created, ImportResult, error) {
	existing, err := r.store.GetDevice(ctx, d.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c, err := r.CreateDevice(ctx, d)
		switch {
		case err == nil:
			return c, Imported, nil
		case errors.Is(err, store.ErrExists) && retry:
			// Created meanwhile by someone else: compare with what is there now.
			return r.importDevice(ctx, d, false)
		case errors.Is(err, domain.ErrInvalid), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrExists):
			return Created{}, Rejected, err
		}
		return Created{}, "", err
	case err != nil:
		return Created{}, "", err
	}
	if diff := differs(existing, d); diff != "" {
		return Created{}, Rejected, domain.Public(store.ErrExists, "device %q exists with a different %s", d.ID, diff)
	}
	return Created{}, Skipped, nil
}

// differs names the first thing want states that got does not match, or "".
func differs(got, want domain.Device) string {
	switch {
	case got.Hub != want.Hub:
		return "hub"
	case got.Auth.Type != want.Auth.Type:
		return "credential type"
	case strings.TrimSpace(got.Auth.PublicKey) != strings.TrimSpace(want.Auth.PublicKey):
		return "public key"
	case got.Auth.CertFingerprint != want.Auth.CertFingerprint:
		return "certificate fingerprint"
	case got.Disabled != want.Disabled:
		return "disabled state"
	case got.MaxTTL != want.MaxTTL:
		return "maxTtlSeconds"
	case got.Gateway != want.Gateway:
		return "gateway flag"
	case got.Parent != want.Parent:
		return "parent"
	}
	if k := keyDiff(got.PrimaryKey, got.SecondaryKey, want.PrimaryKey, want.SecondaryKey); k != "" {
		return k
	}
	if len(got.Modules) != len(want.Modules) {
		return "module list"
	}
	for _, wm := range want.Modules {
		gm, ok := got.Module(wm.ID)
		if !ok {
			return "module list"
		}
		if k := keyDiff(gm.PrimaryKey, gm.SecondaryKey, wm.PrimaryKey, wm.SecondaryKey); k != "" {
			return "module " + wm.ID + " " + k
		}
	}
	return ""
}

// keyDiff compares the keys a line supplies with the stored ones (in constant time;
// they are secrets). Keys held in Vault Transit are not in the record and cannot be
// compared, so supplying them is a difference.
func keyDiff(gotP, gotS, wantP, wantS string) string {
	if wantP != "" && !equalSecret(gotP, wantP) {
		return "primary key"
	}
	if wantS != "" && !equalSecret(gotS, wantS) {
		return "secondary key"
	}
	return ""
}

func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
