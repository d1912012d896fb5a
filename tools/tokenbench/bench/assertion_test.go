package bench

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// devicesByID is the verifier's view of registered ES256 devices.
type devicesByID map[string]domain.Device

func (m devicesByID) GetDevice(_ context.Context, id string) (domain.Device, error) {
	d, ok := m[id]
	if !ok {
		return domain.Device{}, store.ErrNotFound
	}
	return d, nil
}

func mustKeyDevice(t *testing.T, id string) KeyDevice {
	t.Helper()
	d, err := NewKeyDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func registered(t *testing.T, devs ...KeyDevice) devicesByID {
	t.Helper()
	m := devicesByID{}
	for _, d := range devs {
		pub, err := d.PublicKeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		m[d.ID] = domain.Device{ID: d.ID, Hub: "h", Auth: domain.Credential{Type: domain.CredES256, PublicKey: pub}}
	}
	return m
}

// TestES256AssertionsPassTheServiceVerifier checks the storm's assertions with the
// service's own deviceauth.Verifier: accepted as signed, refused when they would be
// refused from a real device (wrong audience, someone else's key, a replayed jti,
// outside the verifier's clock window).
func TestES256AssertionsPassTheServiceVerifier(t *testing.T) {
	now := time.Now()
	alice, bob := mustKeyDevice(t, "alice"), mustKeyDevice(t, "bob")
	tests := []struct {
		name      string
		signer    KeyDevice // whose key signs
		as        string    // device ID in iss/sub
		audience  string
		jti       string
		signedAt  time.Time
		wantValid bool
	}{
		{"valid", alice, "alice", "tokensvc", "j1", now, true},
		{"another valid jti", alice, "alice", "tokensvc", "j2", now, true},
		{"replayed jti", alice, "alice", "tokensvc", "j1", now, false},
		{"wrong audience", alice, "alice", "other", "j3", now, false},
		{"signed with another device's key", bob, "alice", "tokensvc", "j4", now, false},
		{"signed 10 minutes ago", alice, "alice", "tokensvc", "j5", now.Add(-10 * time.Minute), false},
		{"second device", bob, "bob", "tokensvc", "j1", now, true},
	}
	v := deviceauth.NewVerifier(registered(t, alice, bob), "tokensvc", func() time.Time { return now })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.signer
			d.ID = tt.as
			jwt, err := d.Sign(tt.audience, tt.jti+"-", 1, tt.signedAt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(t.Context(), jwt)
			if tt.wantValid && (err != nil || got.ID != tt.as) {
				t.Fatalf("got %q, %v; want accepted as %s", got.ID, err, tt.as)
			}
			if !tt.wantValid && !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Fatalf("got %v, want ErrUnauthenticated", err)
			}
		})
	}
}
