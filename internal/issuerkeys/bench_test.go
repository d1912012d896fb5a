package issuerkeys_test

import (
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// BenchmarkSignJWT signs a credential-sized claim set with an in-memory key (the
// local backend, ring already loaded): the cost per JWT credential tokensvc adds over
// minting. Issue 12's bar: ES256 ≤ 60 µs per token.
func BenchmarkSignJWT(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			st, _ := mustFileStore(b)
			r := mustRing(b, st, newClock(), issuerkeys.Config{})
			now := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
			claims := struct {
				Iss string `json:"iss"`
				Sub string `json:"sub"`
				Aud string `json:"aud"`
				Iat int64  `json:"iat"`
				Exp int64  `json:"exp"`
				Jti string `json:"jti"`
			}{issuerURL, "sensor-0001", "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com", now.Unix(), now.Add(time.Hour).Unix(), "3q2+7wAAAAAAAAAAAAAAAA"}
			if _, _, err := r.SignJWT(b.Context(), alg, claims); err != nil { // creates the key
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := r.SignJWT(b.Context(), alg, claims); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignJWTTransit signs through Vault Transit (a real dev server on loopback)
// and, in the same run on the same Vault, makes raw single transit/sign calls: the
// ring's cost over Transit itself.
func BenchmarkSignJWTTransit(b *testing.B) {
	srv := vaulttest.Start(b)
	vs, err := vaultstore.New(srv.Client(b), vaultstore.Config{Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	r, err := issuerkeys.New(vs, issuerkeys.Transit(vs), issuerkeys.Config{Issuer: issuerURL},
		issuerkeys.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	claims := map[string]any{"iss": issuerURL, "sub": "sensor-0001", "exp": time.Now().Add(time.Hour).Unix()}
	for _, alg := range []string{"ES256", "RS256"} {
		_, kid, err := r.SignJWT(b.Context(), alg, claims)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("ring/"+alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := r.SignJWT(b.Context(), alg, claims); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("raw-transit-sign/"+alg, func(b *testing.B) {
			c := srv.Client(b)
			digest := sha256.Sum256([]byte("header.payload"))
			body := map[string]any{"input": base64.StdEncoding.EncodeToString(digest[:]), "prehashed": true, "marshaling_algorithm": "jws"}
			if alg == "RS256" {
				body["signature_algorithm"] = "pkcs1v15"
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Logical().WriteWithContext(b.Context(), "transit/sign/bench-i-"+kid+"/sha2-256", body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
