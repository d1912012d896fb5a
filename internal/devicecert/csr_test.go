package devicecert_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/testca"
)

func mustKey(tb testing.TB, gen func() (crypto.Signer, error)) crypto.Signer {
	tb.Helper()
	k, err := gen()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func ec(c elliptic.Curve) func() (crypto.Signer, error) {
	return func() (crypto.Signer, error) { return ecdsa.GenerateKey(c, rand.Reader) }
}

func rsaBits(n int) func() (crypto.Signer, error) {
	return func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, n) }
}

// tamper flips a bit of the CSR's signature, keeping it a well-formed request.
func tamper(tb testing.TB, csr string) string {
	tb.Helper()
	b, _ := pem.Decode([]byte(csr))
	der := append([]byte(nil), b.Bytes...)
	der[len(der)-1] ^= 1
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestParseCSR(t *testing.T) {
	p256 := mustKey(t, ec(elliptic.P256()))
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good := testca.CSR(t, p256, "ignored", "evil.example.com")
	all := target.CertificateKeyTypes
	tests := []struct {
		name     string
		csr      string
		allowed  []string
		wantType string
		wantErr  string // part of the refusal; "" for success
	}{
		{name: "ecdsa p256", csr: good, allowed: all, wantType: target.KeyECDSAP256},
		{name: "ecdsa p384", csr: testca.CSR(t, mustKey(t, ec(elliptic.P384())), "x"), allowed: all, wantType: target.KeyECDSAP384},
		{name: "rsa 2048", csr: testca.CSR(t, mustKey(t, rsaBits(2048)), "x"), allowed: all, wantType: target.KeyRSA2048},
		{name: "garbage", csr: "hello, I am a CSR", allowed: all, wantErr: "not a PEM"},
		{name: "empty", csr: "", allowed: all, wantErr: "not a PEM"},
		{name: "certificate not request", csr: string(testca.NewCA(t, "x").CertPEM()), allowed: all, wantErr: "not a CERTIFICATE REQUEST"},
		{name: "PEM of junk", csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("junk")})), allowed: all, wantErr: "not a valid PKCS#10"},
		{name: "two blocks", csr: good + good, allowed: all, wantErr: "one CERTIFICATE REQUEST block only"},
		{name: "wrong signature", csr: tamper(t, good), allowed: all, wantErr: "proof of possession"},
		{name: "tiny rsa", csr: testca.CSR(t, mustKey(t, rsaBits(1024)), "x"), allowed: all, wantErr: "1024 bits is too small"},
		{name: "odd rsa size", csr: testca.CSR(t, mustKey(t, rsaBits(2560)), "x"), allowed: all, wantErr: "2048, 3072 or 4096"},
		{name: "unknown curve p224", csr: testca.CSR(t, mustKey(t, ec(elliptic.P224())), "x"), allowed: all, wantErr: "curve P-224 is not accepted"},
		{name: "ed25519", csr: testca.CSR(t, ed, "x"), allowed: all, wantErr: "Ed25519"},
		{name: "oversized", csr: strings.Repeat("A", devicecert.MaxCSRBytes+1), allowed: all, wantErr: "larger than"},
		{name: "not on the hub's list", csr: testca.CSR(t, mustKey(t, ec(elliptic.P384())), "x"), allowed: []string{target.KeyECDSAP256}, wantErr: "ecdsa-p384 is not accepted by this hub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := devicecert.ParseCSR(tt.csr, tt.allowed)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				if got.KeyType != tt.wantType {
					t.Errorf("key type: got %s, want %s", got.KeyType, tt.wantType)
				}
				return
			}
			if !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("got %v, want domain.ErrInvalid", err)
			}
			pe, _ := errors.AsType[*domain.PublicError](err)
			if pe == nil || !strings.Contains(pe.Public(), tt.wantErr) || !strings.HasPrefix(pe.Public(), "csr: ") {
				t.Errorf("got %q, want csr: ... %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzParseCSR(f *testing.F) {
	f.Add(testca.CSR(f, mustKey(f, ec(elliptic.P256())), "seed"))
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		csr, err := devicecert.ParseCSR(text, target.CertificateKeyTypes)
		if err != nil {
			if !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap domain.ErrInvalid", err)
			}
			return
		}
		if err := csr.Request.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
	})
}
