package deviceauth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// BenchmarkVerify is assertion verification per algorithm: parsing, the device lookup
// (embedded store), the signature, claim checks and the replay cache. Assertions are
// signed before the timed loop, each with its own jti.
func BenchmarkVerify(b *testing.B) {
	ecKey := testca.P256Key(b)
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		alg    string
		cred   domain.Credential
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", domain.Credential{Type: domain.CredHS256, Secret: []byte("s3cret-s3cret-s3cret")}, jwt.SigningMethodHS256, []byte("s3cret-s3cret-s3cret")},
		{"ES256", domain.Credential{Type: domain.CredES256, PublicKey: testca.PublicKeyPEM(b, &ecKey.PublicKey)}, jwt.SigningMethodES256, ecKey},
		{"EdDSA", domain.Credential{Type: domain.CredEdDSA, PublicKey: testca.PublicKeyPEM(b, edPub)}, jwt.SigningMethodEdDSA, edKey},
	} {
		b.Run(c.alg, func(b *testing.B) {
			st := mustStore(b)
			id := "bench-" + c.alg
			if err := st.CreateDevice(context.Background(), domain.Device{ID: id, Hub: "h", Auth: c.cred}); err != nil {
				b.Fatal(err)
			}
			const pool = 50_000
			assertions := make([]string, pool)
			for i := range assertions {
				s, err := jwt.NewWithClaims(c.method, jwt.MapClaims{
					"iss": id, "sub": id, "aud": "tokensvc", "iat": epoch.Unix(), "exp": epoch.Add(time.Minute).Unix(), "jti": strconv.Itoa(i),
				}).SignedString(c.key)
				if err != nil {
					b.Fatal(err)
				}
				assertions[i] = s
			}
			v := deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch })
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == pool {
					b.StopTimer()
					v = deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch })
					i = 0
					b.StartTimer()
				}
				if _, err := v.Verify(ctx, assertions[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkVerifyNonce is a clockless device's HS256 nonce assertion: as BenchmarkVerify
// plus opening the nonce and checking its HMAC tag. Nonces and assertions are made
// before the timed loop.
func BenchmarkVerifyNonce(b *testing.B) {
	st := mustStore(b)
	keys := deviceauth.NewNonceKeys(st, func() time.Time { return epoch }, nil)
	if err := keys.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	newVerifier := func() *deviceauth.Verifier {
		return deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch }, deviceauth.WithNonceKeys(keys))
	}
	v := newVerifier()
	const pool = 50_000
	assertions := make([]string, pool)
	for i := range assertions {
		n, _ := v.IssueNonce()
		assertions[i] = nonceAssertion(b, n, secret, nil)
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == pool {
			b.StopTimer()
			v, i = newVerifier(), 0
			b.StartTimer()
		}
		if _, err := v.Verify(ctx, assertions[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
