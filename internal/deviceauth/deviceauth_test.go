package deviceauth_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

var epoch = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func mustStore(tb testing.TB) store.Store {
	tb.Helper()
	st, err := filestore.Open(filepath.Join(tb.TempDir(), "db"), make([]byte, 32))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.CreateHub(ctx, domain.Hub{Name: "h", Kind: domain.KindIoTHub, Hostname: "x.azure-devices.net", Mode: domain.SignDeviceKey}); err != nil {
		tb.Fatal(err)
	}
	if err := st.CreateDevice(ctx, domain.Device{ID: "d1", Hub: "h", Auth: domain.Credential{Type: domain.CredHS256, Secret: []byte("s3cret-s3cret-s3cret")}}); err != nil {
		tb.Fatal(err)
	}
	return st
}

func assertion(tb testing.TB, jti string, secret string) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "d1", "sub": "d1", "aud": "tokensvc", "iat": epoch.Unix(), "exp": epoch.Add(time.Minute).Unix(), "jti": jti,
	}).SignedString([]byte(secret))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestReplayWindow(t *testing.T) {
	now := epoch
	v := deviceauth.NewVerifier(mustStore(t), "tokensvc", func() time.Time { return now })
	a := assertion(t, "once", "s3cret-s3cret-s3cret")
	if _, err := v.Verify(t.Context(), a); err != nil {
		t.Fatalf("first use: got %v, want success", err)
	}
	now = epoch.Add(50 * time.Second)
	if _, err := v.Verify(t.Context(), a); !errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Fatalf("replay inside the window: got %v, want ErrUnauthenticated", err)
	}
	// Past exp + leeway the assertion is refused as expired, whatever the cache holds.
	now = epoch.Add(2 * time.Minute)
	if _, err := v.Verify(t.Context(), a); !errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Fatalf("after expiry: got %v, want ErrUnauthenticated", err)
	}
}

func TestStoreUnavailableIsNotAnAuthFailure(t *testing.T) {
	v := deviceauth.NewVerifier(unavailable{}, "tokensvc", func() time.Time { return epoch })
	_, err := v.Verify(t.Context(), assertion(t, "j", "s3cret-s3cret-s3cret"))
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Fatalf("got %v, want store.ErrUnavailable and not ErrUnauthenticated", err)
	}
}

// unavailable is a store that is down: a failure the embedded store cannot produce on demand.
type unavailable struct{}

func (unavailable) GetDevice(context.Context, string) (domain.Device, error) {
	return domain.Device{}, store.ErrUnavailable
}

// FuzzVerify feeds arbitrary assertions: the verifier must never panic, and must accept
// nothing but the one genuine assertion it was seeded with.
func FuzzVerify(f *testing.F) {
	st := mustStore(f)
	genuine := assertion(f, "genuine", "s3cret-s3cret-s3cret")
	f.Add(genuine)
	f.Add(assertion(f, "other", "wrong-secret-wrong-secret"))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJkMSJ9.")
	f.Add("a.b.c.d.e")
	f.Fuzz(func(t *testing.T, s string) {
		v := deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch })
		d, err := v.Verify(context.Background(), s)
		if err == nil && s != genuine {
			t.Fatalf("accepted a forged assertion for %q: %q", d.ID, s)
		}
	})
}

// TestCritHeaderRefused: RFC 7515 §4.1.11 — a JWS whose crit header lists extensions
// the recipient does not implement must be refused, however valid the rest is; the
// same assertion without crit is accepted.
func TestCritHeaderRefused(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]any
		ok     bool
	}{
		{"no crit", nil, true},
		{"crit naming an unknown extension", map[string]any{"crit": []string{"exp-ext"}, "exp-ext": 1}, false},
		{"crit naming a header that is absent", map[string]any{"crit": []string{"b64"}}, false},
		{"empty crit list", map[string]any{"crit": []string{}}, false},
		{"crit of the wrong type", map[string]any{"crit": "b64"}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := deviceauth.NewVerifier(mustStore(t), "tokensvc", func() time.Time { return epoch })
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
				"iss": "d1", "sub": "d1", "aud": "tokensvc", "iat": epoch.Unix(), "exp": epoch.Add(time.Minute).Unix(), "jti": "crit-" + string(rune('a'+i)),
			})
			for k, val := range tt.header {
				tok.Header[k] = val
			}
			a, err := tok.SignedString([]byte("s3cret-s3cret-s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(t.Context(), a)
			if tt.ok && err != nil {
				t.Fatalf("got %v, want accepted", err)
			}
			if !tt.ok && !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Fatalf("got %v, want ErrUnauthenticated", err)
			}
		})
	}
}

// downReplay is a shared replay store that cannot be reached: a failure a real server
// can be made to show (cmd/tokensvc's replica test kills one), faked here to pin the
// error class.
type downReplay struct{}

func (downReplay) Consume(context.Context, string, time.Time) (bool, error) {
	return false, fmt.Errorf("dial: %w", store.ErrUnavailable)
}

// TestReplayStoreDownFailsClosed: with the shared replay store unreachable a valid
// assertion or nonce is refused as unavailable (503), never accepted and never a 401.
func TestReplayStoreDownFailsClosed(t *testing.T) {
	v := deviceauth.NewVerifier(mustStore(t), "tokensvc", func() time.Time { return epoch }, deviceauth.WithReplayStore(downReplay{}))
	n, _ := v.IssueNonce()
	for name, a := range map[string]string{
		"jti":   assertion(t, "j1", "s3cret-s3cret-s3cret"),
		"nonce": nonceAssertion(t, n, secret, nil),
	} {
		_, err := v.Verify(t.Context(), a)
		if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, deviceauth.ErrUnauthenticated) {
			t.Errorf("%s: got %v, want store.ErrUnavailable and not ErrUnauthenticated", name, err)
		}
	}
	// A forged assertion is still a 401: the replay store is asked only at the end.
	if _, err := v.Verify(t.Context(), assertion(t, "j2", "wrong-secret")); !errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Errorf("wrong signature: got %v, want ErrUnauthenticated", err)
	}
}
