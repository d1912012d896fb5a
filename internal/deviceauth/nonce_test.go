package deviceauth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
)

const secret = "s3cret-s3cret-s3cret"

func nonceAssertion(tb testing.TB, nonce, key string, extra map[string]any) string {
	tb.Helper()
	c := jwt.MapClaims{"iss": "d1", "sub": "d1", "aud": "tokensvc", "nonce": nonce}
	for k, v := range extra {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(key))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// replicaPair is two verifiers ("replicas") sharing one store, as with the Vault store.
func replicaPair(tb testing.TB, clock func() time.Time, opts ...deviceauth.Option) (a, b *deviceauth.Verifier, keysA, keysB *deviceauth.NonceKeys) {
	tb.Helper()
	st := mustStore(tb)
	keysA = deviceauth.NewNonceKeys(st, clock, nil)
	keysB = deviceauth.NewNonceKeys(st, clock, nil)
	for _, k := range []*deviceauth.NonceKeys{keysA, keysB} {
		if err := k.Load(context.Background()); err != nil {
			tb.Fatal(err)
		}
	}
	a = deviceauth.NewVerifier(st, "tokensvc", clock, append(opts, deviceauth.WithNonceKeys(keysA))...)
	b = deviceauth.NewVerifier(st, "tokensvc", clock, append(opts, deviceauth.WithNonceKeys(keysB))...)
	return a, b, keysA, keysB
}

// TestNonceAcrossReplicas: a nonce one replica issued is accepted by another; whether it
// is then refused everywhere depends on the replay store being shared.
func TestNonceAcrossReplicas(t *testing.T) {
	clock := func() time.Time { return epoch }
	t.Run("shared replay store", func(t *testing.T) {
		shared := deviceauth.NewMemoryReplay(clock)
		a, b, _, _ := replicaPair(t, clock, deviceauth.WithReplayStore(shared))
		n, _ := a.IssueNonce()
		as := nonceAssertion(t, n, secret, nil)
		if _, err := b.Verify(t.Context(), as); err != nil {
			t.Fatalf("on the other replica: got %v, want success", err)
		}
		for name, v := range map[string]*deviceauth.Verifier{"issuer": a, "other": b} {
			if _, err := v.Verify(t.Context(), as); !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Errorf("replayed on the %s replica: got %v, want ErrUnauthenticated", name, err)
			}
		}
	})
	t.Run("per-replica memory", func(t *testing.T) {
		// What the README's security model says per-replica memory allows: one more use
		// on each other replica, never two on one.
		a, b, _, _ := replicaPair(t, clock)
		n, _ := a.IssueNonce()
		as := nonceAssertion(t, n, secret, nil)
		for name, v := range map[string]*deviceauth.Verifier{"issuer": a, "other": b} {
			if _, err := v.Verify(t.Context(), as); err != nil {
				t.Fatalf("first use on the %s replica: got %v, want success", name, err)
			}
			if _, err := v.Verify(t.Context(), as); !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Errorf("second use on the %s replica: got %v, want ErrUnauthenticated", name, err)
			}
		}
	})
}

// TestNonceForgery: only a nonce tagged by a key of the ring, intact and in time, is
// accepted; a ring that never shared its key accepts none of another's.
func TestNonceForgery(t *testing.T) {
	now := epoch
	clock := func() time.Time { return now }
	a, _, _, _ := replicaPair(t, clock)
	stranger := deviceauth.NewVerifier(mustStore(t), "tokensvc", clock) // its own key
	good, _ := a.IssueNonce()
	foreign, _ := stranger.IssueNonce()
	flip := func(s string, i int) string {
		b, _ := base64.RawURLEncoding.DecodeString(s)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tests := []struct {
		name  string
		nonce string
	}{
		{"kid changed", flip(good, 0)},
		{"issue time changed", flip(good, 9)},
		{"random part changed", flip(good, 20)},
		{"tag changed", flip(good, 41)},
		{"truncated", good[:len(good)-1]},
		{"padded", good + "="},
		{"not base64", strings.Repeat("*", len(good))},
		{"another service's key", foreign},
		{"old-style random nonce", base64.RawURLEncoding.EncodeToString(make([]byte, 16))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := a.Verify(t.Context(), nonceAssertion(t, tt.nonce, secret, nil)); !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Errorf("got %v, want ErrUnauthenticated", err)
			}
		})
	}
	// None of the refusals burnt the good nonce.
	if _, err := a.Verify(t.Context(), nonceAssertion(t, good, secret, nil)); err != nil {
		t.Errorf("the untouched nonce: got %v, want success", err)
	}
}

// TestNonceKeyRotation: a replica rotates a key in; another accepts its nonces before
// its own reload (an unknown kid makes it read the ring), nonces of the previous key
// stay good, and three rotations later the oldest key is gone.
func TestNonceKeyRotation(t *testing.T) {
	now := epoch
	clock := func() time.Time { return now }
	a, b, keysA, _ := replicaPair(t, clock)
	before, _ := a.IssueNonce()
	now = now.Add(deviceauth.NonceKeyRotation)
	if err := keysA.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	after, _ := a.IssueNonce()
	if before[:6] == after[:6] {
		t.Fatalf("the rotated ring still signs with the old kid")
	}
	now = now.Add(10 * time.Second)
	if _, err := b.Verify(t.Context(), nonceAssertion(t, after, secret, nil)); err != nil {
		t.Errorf("the new key's nonce on a replica that has not reloaded: got %v, want success", err)
	}
	for range 3 {
		now = now.Add(deviceauth.NonceKeyRotation)
		if err := keysA.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// A nonce under the first key, presented within its lifetime by a clock that was
	// set back, shows the key itself is gone from the ring.
	now = epoch
	fresh := deviceauth.NewVerifier(mustStore(t), "tokensvc", clock, deviceauth.WithNonceKeys(keysA))
	if _, err := fresh.Verify(t.Context(), nonceAssertion(t, before, secret, nil)); !errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Errorf("a nonce of a key rotated out: got %v, want ErrUnauthenticated", err)
	}
}

// TestNonceFromPreviousKey: a nonce issued just before a rotation is accepted after it.
func TestNonceFromPreviousKey(t *testing.T) {
	now := epoch
	clock := func() time.Time { return now }
	a, b, keysA, keysB := replicaPair(t, clock)
	now = now.Add(deviceauth.NonceKeyRotation - time.Second)
	n, _ := a.IssueNonce()
	now = now.Add(2 * time.Second)
	for _, k := range []*deviceauth.NonceKeys{keysA, keysB} { // A rotates, B reloads
		if err := k.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := a.IssueNonce(); m[:6] == n[:6] {
		t.Fatalf("no rotation happened: both nonces carry kid %q", n[:6])
	}
	if _, err := b.Verify(t.Context(), nonceAssertion(t, n, secret, nil)); err != nil {
		t.Errorf("a nonce of the previous key: got %v, want success", err)
	}
}

func TestNonceExpiry(t *testing.T) {
	now := epoch
	v := deviceauth.NewVerifier(mustStore(t), "tokensvc", func() time.Time { return now })
	a, _ := v.IssueNonce()
	b, _ := v.IssueNonce()
	now = now.Add(deviceauth.NonceTTL)
	if _, err := v.Verify(t.Context(), nonceAssertion(t, a, secret, nil)); err != nil {
		t.Errorf("at exactly the TTL: got %v, want success", err)
	}
	now = now.Add(time.Second)
	if _, err := v.Verify(t.Context(), nonceAssertion(t, b, secret, nil)); !errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Errorf("after the TTL: got %v, want ErrUnauthenticated", err)
	}
	// Issuing sweeps expired nonces; a long-running issuer stays bounded without a cap.
	for range 10 {
		v.IssueNonce()
	}
}

// FuzzVerifyNonce signs arbitrary claims with the device's real secret around a nonce:
// whatever iat, exp, aud or nonce say, the verifier must not panic, must accept only an
// assertion for the right audience carrying the issued nonce, and only once.
func FuzzVerifyNonce(f *testing.F) {
	st := mustStore(f)
	f.Add("", int64(946684800), int64(946684860), "tokensvc", true)
	f.Add("x", int64(0), int64(0), "tokensvc", false)
	f.Add("", int64(-1), int64(1<<62), "other", true)
	f.Add("\x00", int64(epoch.Unix()), int64(epoch.Unix()-1), "", true)
	f.Fuzz(func(t *testing.T, nonce string, iat, exp int64, aud string, useIssued bool) {
		v := deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch })
		issued, _ := v.IssueNonce()
		if useIssued {
			nonce = issued
		}
		a := nonceAssertion(t, nonce, secret, map[string]any{"iat": iat, "exp": exp, "aud": aud})
		_, err := v.Verify(context.Background(), a)
		wantOK := nonce == issued && aud == "tokensvc"
		if nonce == "" {
			// Without a nonce the clock rules apply, and these claims never satisfy them
			// together with a missing jti.
			wantOK = false
		}
		if (err == nil) != wantOK {
			t.Fatalf("nonce %q aud %q iat %d exp %d: got error %v, want ok=%v", nonce, aud, iat, exp, err, wantOK)
		}
		if err == nil {
			if _, err := v.Verify(context.Background(), a); err == nil {
				t.Fatalf("a nonce was accepted twice")
			}
		}
	})
}
