package certificate_test

import (
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestCertificatesFromVaultPKI runs the agent's certificate mode against the service on
// the real Vault (store vault, the PKI engine signing with the README's role, a token
// holding only deploy/vault/tokensvc.hcl): a first certificate and a renewal for the
// same device key, both Vault-signed, and the renewed one gets through the stand-in,
// which trusts the hub's CA from GET /hubs/{name}/ca.pem. (Run with
// TOKENSVC_VAULT_BIN=$(bash scripts/vault.sh); without it the test skips.)
func TestCertificatesFromVaultPKI(t *testing.T) {
	srv := vaulttest.Start(t)
	f := testpeer.NewVaultCertFixture(t, srv, "../../../deploy/vault/tokensvc.hcl", "thing-0006", 5*time.Minute)
	cf := f.Certificates(t, t.TempDir())
	first, err := cf.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := cf.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Certificate.Serial == first.Certificate.Serial || renewed.Key != first.Key {
		t.Fatalf("renewal: serial %s after %s, key %q after %q; want a new certificate for the same key",
			renewed.Certificate.Serial, first.Certificate.Serial, renewed.Key, first.Key)
	}
	// Vault counts from its own now, a moment after the service's serverTime.
	if l := renewed.Lifetime(); l < 5*time.Minute-5*time.Second || l > 5*time.Minute+5*time.Second {
		t.Errorf("lifetime: got %v, want the hub's 5m", l)
	}
	mustPublishWith(t, f, cf, renewed)
}
