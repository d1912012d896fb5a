package deviceauth_test

import (
	"context"
	"errors"
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

func TestNonceLimitEvictsOldest(t *testing.T) {
	now := epoch
	v := deviceauth.NewVerifier(mustStore(t), "tokensvc", func() time.Time { return now }, deviceauth.WithNonceLimit(3))
	var ns []string
	for range 4 {
		n, exp := v.IssueNonce()
		if want := now.Add(deviceauth.NonceTTL); !exp.Equal(want) {
			t.Fatalf("expiresAt: got %v, want %v", exp, want)
		}
		ns = append(ns, n)
	}
	tests := []struct {
		name  string
		nonce string
		ok    bool
	}{
		{"oldest, evicted by the fourth", ns[0], false},
		{"second", ns[1], true},
		{"fourth", ns[3], true},
		{"fourth again", ns[3], false},
	}
	for _, tt := range tests {
		_, err := v.Verify(t.Context(), nonceAssertion(t, tt.nonce, secret, nil))
		if (err == nil) != tt.ok {
			t.Errorf("%s: got error %v, want ok=%v", tt.name, err, tt.ok)
		}
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
