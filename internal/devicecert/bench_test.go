package devicecert_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"runtime"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

var p256 = []string{"ecdsa-p256"}

// BenchmarkLocalCA: certificates per second on the embedded CA (ECDSA P-256), the
// service's whole part (CSR parse and proof-of-possession check, template, signature)
// beside x509.CreateCertificate alone with the same key and template (the floor).
func BenchmarkLocalCA(b *testing.B) {
	st := &settingsMap{m: map[string][]byte{}}
	ca := devicecert.NewLocal(st, nil)
	hub := domain.Hub{Name: "bench"}
	csrPEM := testca.CSR(b, mustKey(b, ec(elliptic.P256())), "x")
	chain, err := ca.Chain(b.Context(), hub, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("issue", func(b *testing.B) { benchIssue(b, ca, hub, csrPEM) })
	b.Run("raw-x509", func(b *testing.B) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		parent := chain[0]
		csr, _ := devicecert.ParseCSR(csrPEM, p256)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev-1"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		// Another key signs here (the CA's is not exported); the cost is the same.
		parent = &x509.Certificate{Subject: parent.Subject, PublicKey: key.Public(), SubjectKeyId: parent.SubjectKeyId}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.Request.PublicKey, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// settingsMap is devicecert.Settings in memory.
type settingsMap struct{ m map[string][]byte }

func (s *settingsMap) GetSetting(_ context.Context, name string) ([]byte, error) {
	v, ok := s.m[name]
	if !ok {
		return nil, store.ErrNotFound
	}
	return v, nil
}

func (s *settingsMap) PutSetting(_ context.Context, name string, v []byte) error {
	s.m[name] = v
	return nil
}

// BenchmarkVaultPKI: certificates per second through Vault's PKI engine, the service's
// path (CSR check, vaultstore.SignCSR, parsing and checking Vault's answer) beside a
// bare pki/sign call with the same CSR, on the same dev server in the same run.
func BenchmarkVaultPKI(b *testing.B) {
	srv := vaulttest.Start(b)
	srv.MountPKI(b, "pki", vaultstore.DefaultPKIRole)
	vs, err := vaultstore.New(srv.Client(b), vaultstore.Config{RequestTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ca := devicecert.NewVault(vs, nil)
	hub := domain.Hub{Name: "bench"}
	csrPEM := testca.CSR(b, mustKey(b, ec(elliptic.P256())), "x")
	b.Run("service", func(b *testing.B) { benchIssue(b, ca, hub, csrPEM) })
	c := srv.Client(b)
	rawSign := func(b *testing.B) {
		body := map[string]any{"csr": csrPEM, "common_name": "dev-1", "ttl": "86400s", "exclude_cn_from_sans": true}
		if _, err := c.Logical().WriteWithContext(b.Context(), "pki/sign/"+vaultstore.DefaultPKIRole, body); err != nil {
			b.Error(err)
		}
	}
	b.Run("raw-pki-sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rawSign(b)
		}
	})
	// 16 requests in flight: what Vault's signing sustains, beside the raw calls.
	b.Run("service-16", func(b *testing.B) {
		b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				csr, err := devicecert.ParseCSR(csrPEM, p256)
				if err == nil {
					_, err = ca.Sign(b.Context(), hub, csr.Request, devicecert.Spec{CommonName: "dev-1", TTL: 24 * time.Hour})
				}
				if err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("raw-pki-sign-16", func(b *testing.B) {
		b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				rawSign(b)
			}
		})
	})
}

// benchIssue times the service's part of one certificate: the CSR checks, then ca's
// signature.
func benchIssue(b *testing.B, ca devicecert.Authority, hub domain.Hub, csrPEM string) {
	b.ReportAllocs()
	for b.Loop() {
		csr, err := devicecert.ParseCSR(csrPEM, p256)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ca.Sign(b.Context(), hub, csr.Request, devicecert.Spec{CommonName: "dev-1", TTL: 24 * time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
}
