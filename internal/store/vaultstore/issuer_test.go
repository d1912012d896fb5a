package vaultstore_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestIssuerKeysInTransit: issuer keys are created in Transit with the type their
// algorithm needs, are not exportable, and sign digests that verify against the
// public key the store read back.
func TestIssuerKeysInTransit(t *testing.T) {
	srv := vaulttest.Start(t)
	s := mustStore(t, srv)
	root := srv.Client(t)
	ctx := t.Context()
	digest := sha256.Sum256([]byte("header.payload"))
	for _, tc := range []struct {
		alg      domain.IssuerAlg
		wantType string
	}{{domain.AlgES256, "ecdsa-p256"}, {domain.AlgRS256, "rsa-2048"}} {
		t.Run(string(tc.alg), func(t *testing.T) {
			kid := "k-" + string(tc.alg)
			pub, err := s.CreateIssuerKey(ctx, kid, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			sec, err := root.Logical().Read("transit/keys/" + s.Config().Prefix + "-i-" + kid)
			if err != nil || sec == nil {
				t.Fatalf("read the Transit key as root: %v", err)
			}
			if sec.Data["type"] != tc.wantType || sec.Data["exportable"] != false {
				t.Errorf("Transit key type %v exportable %v, want %s and false", sec.Data["type"], sec.Data["exportable"], tc.wantType)
			}
			sig, err := s.SignIssuerDigest(ctx, kid, tc.alg, digest[:])
			if err != nil {
				t.Fatal(err)
			}
			switch p := pub.(type) {
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(p, crypto.SHA256, digest[:], sig); err != nil {
					t.Errorf("Transit RS256 signature does not verify as PKCS#1 v1.5: %v", err)
				}
			case *ecdsa.PublicKey:
				r, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
				if len(sig) != 64 || !ecdsa.Verify(p, digest[:], r, ss) {
					t.Errorf("Transit ES256 signature (%d bytes) does not verify as r||s", len(sig))
				}
			default:
				t.Fatalf("public key %T", pub)
			}
		})
	}
	if _, err := s.SignIssuerDigest(ctx, "absent", domain.AlgES256, digest[:]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("sign with an absent key: got %v, want store.ErrNotFound", err)
	}
	if _, err := s.CreateIssuerKey(ctx, "../x", domain.AlgES256); err == nil {
		t.Error("a kid with a path in it was accepted")
	}
	if _, err := s.SignIssuerDigest(ctx, "k-ES256", domain.AlgES256, []byte("short")); err == nil {
		t.Error("a digest that is not SHA-256 was signed")
	}
}

// TestIssuerSignUnavailable: a Vault that does not answer makes signing fail with
// store.ErrUnavailable within the request timeout.
func TestIssuerSignUnavailable(t *testing.T) {
	srv := vaulttest.Start(t)
	s := mustStore(t, srv)
	if _, err := s.CreateIssuerKey(t.Context(), "k1", domain.AlgES256); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	digest := sha256.Sum256([]byte("x"))
	if _, err := s.SignIssuerDigest(t.Context(), "k1", domain.AlgES256, digest[:]); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("sign while Vault is paused: got %v, want store.ErrUnavailable", err)
	}
}
