package vaultstore_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

func mustParsePEM(tb testing.TB, text string) *x509.Certificate {
	tb.Helper()
	b, _ := pem.Decode([]byte(text))
	if b == nil {
		tb.Fatalf("not PEM: %q", text)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestPKISign runs the device-certificate calls with a token holding only
// deploy/vault/tokensvc.hcl against the PKI engine as the operator steps set it up:
// the role signs what the service decided (CN, lifetime) and nothing the CSR asked
// for, the chain comes back, the CA key was never exported and the policy cannot get
// at it, and a Vault that stops answering is store.ErrUnavailable.
func TestPKISign(t *testing.T) {
	srv := vaulttest.Start(t)
	caPEM, generated := srv.MountPKI(t, "pki", vaultstore.DefaultPKIRole)
	for k, v := range generated {
		if s, ok := v.(string); strings.Contains(k, "private") || (ok && strings.Contains(s, "PRIVATE KEY")) {
			t.Errorf("generating the root returned private key material in %q", k)
		}
	}
	policy, err := os.ReadFile("../../../deploy/vault/tokensvc.hcl")
	if err != nil {
		t.Fatal(err)
	}
	pc := tokenWithPolicy(t, srv, "tokensvc", string(policy))
	s := mustStoreWith(t, pc, vaultstore.Config{Prefix: "tokensvc"})
	ctx := t.Context()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := testca.CSR(t, key, "root", "evil.example.com", "localhost")
	signed, err := s.SignCSR(ctx, "", csr, "dev-1/mod-a", 2*time.Hour)
	if err != nil {
		t.Fatalf("SignCSR under the documented policy: %v", err)
	}
	leaf := mustParsePEM(t, signed.Certificate)
	ca := mustParsePEM(t, caPEM)
	if leaf.Subject.CommonName != "dev-1/mod-a" || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.URIs)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf: got CN %q SANs %v %v %v, want CN dev-1/mod-a and no SAN", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses, leaf.URIs)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("leaf: CA %v KU %v EKU %v, want no CA, digitalSignature, clientAuth only", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 2*time.Hour+4*time.Minute || life > 2*time.Hour+6*time.Minute {
		t.Errorf("validity %s to %s: want 2 h plus the 5 min backdating", leaf.NotBefore, leaf.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not chain to the PKI root: %v", err)
	}
	chain, err := s.PKIChain(ctx, "")
	if err != nil {
		t.Fatalf("PKIChain under the documented policy: %v", err)
	}
	if len(chain) == 0 || !mustParsePEM(t, chain[0]).Equal(ca) || len(signed.Chain) == 0 || !mustParsePEM(t, signed.Chain[0]).Equal(ca) {
		t.Errorf("chains: got %d and %d certificates, want the root first", len(chain), len(signed.Chain))
	}

	// The CA key never leaves Vault: the policy reaches no key or export path, and even
	// root reads of the key return no private half.
	for _, path := range []string{"pki/keys", "pki/root/generate/exported", "pki/issuer/devices/der", "pki/roles/other"} {
		sec, err := pc.Logical().ReadWithContext(ctx, path)
		if err == nil && sec != nil {
			b, _ := json.Marshal(sec.Data)
			if strings.Contains(string(b), "PRIVATE KEY") {
				t.Errorf("%s: the policy read private key material", path)
			}
		}
	}
	if _, err := pc.Logical().WriteWithContext(ctx, "pki/root/generate/exported", map[string]any{"common_name": "x"}); err == nil {
		t.Error("the policy may generate (and export) a CA key")
	}
	if _, err := s.SignCSR(ctx, "not-tokensvc", csr, "dev-1", time.Hour); !errors.Is(err, vaultstore.ErrPermissionDenied) {
		t.Errorf("sign with a role outside tokensvc-*: got %v, want ErrPermissionDenied", err)
	}
	keys, err := srv.Client(t).Logical().ListWithContext(ctx, "pki/keys")
	if err != nil || keys == nil {
		t.Fatalf("list keys as root: %v", err)
	}
	for _, id := range keys.Data["keys"].([]any) {
		sec, err := srv.Client(t).Logical().ReadWithContext(ctx, "pki/key/"+id.(string))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(sec.Data)
		if strings.Contains(string(b), "PRIVATE") {
			t.Errorf("key %s: Vault returns its private half", id)
		}
	}

	// Vault stops answering: the sign fails fast as unavailable (a 503 upstream).
	srv.Pause()
	_, err = s.SignCSR(ctx, "", csr, "dev-1", time.Hour)
	srv.Resume()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("sign while Vault hangs: got %v, want store.ErrUnavailable", err)
	}
}
