package devicecert_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestVaultRefusesWhatTheRoleLetThrough: a hub may name any tokensvc-* PKI role
// (pkiRole), and Vault signs what that role allows. A role that departs from the
// README's settings must not hand a device more than Template would: a certificate
// carrying the CSR's names, a server EKU or CA key usages is refused (nothing reaches
// the device), while the documented role signs.
func TestVaultRefusesWhatTheRoleLetThrough(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.MountPKI(t, "pki", vaultstore.DefaultPKIRole)
	c := srv.Client(t)
	role := func(name string, change map[string]any) string {
		t.Helper()
		r := maps.Clone(vaulttest.PKIRole)
		maps.Copy(r, change)
		if _, err := c.Logical().WriteWithContext(t.Context(), "pki/roles/"+name, r); err != nil {
			t.Fatalf("role %s: %v", name, err)
		}
		return name
	}
	vs, err := vaultstore.New(c, vaultstore.Config{RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ca := devicecert.NewVault(vs, nil)
	key := mustKey(t, ec(elliptic.P256())).(*ecdsa.PrivateKey)
	csr, err := devicecert.ParseCSR(testca.CSR(t, key, "dev-1", "broker.example.com"), p256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, role string
		ok         bool
	}{
		{"the documented role", vaultstore.DefaultPKIRole, true},
		{"the CSR's names", role("tokensvc-csr-sans", map[string]any{"use_csr_sans": true}), false},
		{"a server EKU", role("tokensvc-server", map[string]any{"server_flag": true}), false},
		{"an extra EKU", role("tokensvc-code", map[string]any{"code_signing_flag": true}), false},
		{"CA key usages", role("tokensvc-certsign", map[string]any{"key_usage": []string{"DigitalSignature", "CertSign", "CRLSign"}}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signed, err := ca.Sign(t.Context(), domain.Hub{Name: "h"}, csr.Request, devicecert.Spec{CommonName: "dev-1", TTL: time.Hour, Role: tc.role})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("documented role: %v", err)
			case tc.ok:
				if l := signed.Leaf; len(l.DNSNames) != 0 || len(l.ExtKeyUsage) != 1 || l.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
					t.Errorf("documented role: SANs %v EKU %v", l.DNSNames, l.ExtKeyUsage)
				}
			case err == nil:
				l := signed.Leaf
				t.Fatalf("signed and handed out: SANs %v, EKU %v, key usage %b", l.DNSNames, l.ExtKeyUsage, l.KeyUsage)
			case !strings.Contains(err.Error(), "check the PKI role"):
				t.Errorf("refused for another reason: %v", err)
			}
		})
	}
}
