package devicecert

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
)

// PKI is Vault's PKI secrets engine as Vault uses it; *vaultstore.Store implements it.
type PKI interface {
	// SignCSR has role ("" for the default) sign csrPEM for subject cn, valid for ttl.
	SignCSR(ctx context.Context, role, csrPEM, cn string, ttl time.Duration) (vaultstore.PKISigned, error)
	// PKIChain returns the CA chain role signs with, issuing CA first.
	PKIChain(ctx context.Context, role string) ([]string, error)
}

// chainTTL is how long Vault keeps a role's CA chain in memory for GET ca.pem.
const chainTTL = 5 * time.Minute

// Vault is the CA of the Vault store: the PKI engine signs with the hub's role
// (pkiRole, else the service's default), so the CA key never leaves Vault. The role,
// not this code, bounds what Vault will sign; the service still decides the CN and
// the lifetime and has checked the CSR.
type Vault struct {
	pki    PKI
	now    func() time.Time
	mu     sync.Mutex
	chains map[string]cachedChain // role → chain
}

type cachedChain struct {
	certs []*x509.Certificate
	until time.Time
}

var _ Authority = (*Vault)(nil)

// NewVault returns the CA backed by pki; now is the clock (nil: time.Now).
func NewVault(pki PKI, now func() time.Time) *Vault {
	if now == nil {
		now = time.Now
	}
	return &Vault{pki: pki, now: now, chains: map[string]cachedChain{}}
}

// Sign implements Authority.
func (v *Vault) Sign(ctx context.Context, h domain.Hub, csr *x509.CertificateRequest, s Spec) (Signed, error) {
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	out, err := v.pki.SignCSR(ctx, s.Role, csrPEM, s.CommonName, s.TTL)
	if err != nil {
		return Signed{}, fmt.Errorf("hub %q: %w", h.Name, err)
	}
	leaf, err := domain.ParseCertificates(out.Certificate)
	if err != nil || len(leaf) != 1 {
		return Signed{}, fmt.Errorf("hub %q: Vault's certificate does not parse: %v", h.Name, err)
	}
	chain, err := domain.ParseCertificates(strings.Join(out.Chain, "\n"))
	if err != nil {
		return Signed{}, fmt.Errorf("hub %q: Vault's CA chain does not parse: %v", h.Name, err)
	}
	// The role should make these hold; a role that does not is refused here rather
	// than handed to a device.
	if err := checkVaultLeaf(leaf[0], s.CommonName); err != nil {
		return Signed{}, fmt.Errorf("hub %q: Vault signed %v: check the PKI role", h.Name, err)
	}
	v.remember(s.Role, chain)
	return Signed{Leaf: leaf[0], Chain: chain}, nil
}

// Chain implements Authority: the chain of the hub's role.
func (v *Vault) Chain(ctx context.Context, h domain.Hub, role string) ([]*x509.Certificate, error) {
	v.mu.Lock()
	c, ok := v.chains[role]
	v.mu.Unlock()
	if ok && v.now().Before(c.until) {
		return c.certs, nil
	}
	texts, err := v.pki.PKIChain(ctx, role)
	if err != nil {
		return nil, fmt.Errorf("hub %q: %w", h.Name, err)
	}
	certs, err := domain.ParseCertificates(strings.Join(texts, "\n"))
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("hub %q: Vault's CA chain does not parse: %v", h.Name, err)
	}
	v.remember(role, certs)
	return certs, nil
}

func (v *Vault) remember(role string, certs []*x509.Certificate) {
	if len(certs) == 0 {
		return
	}
	v.mu.Lock()
	v.chains[role] = cachedChain{certs: certs, until: v.now().Add(chainTTL)}
	v.mu.Unlock()
}

// caKeyUsages are key usages only a CA's certificate may carry.
const caKeyUsages = x509.KeyUsageCertSign | x509.KeyUsageCRLSign

// checkVaultLeaf holds a certificate Vault signed to what Template would have made: the
// service's CN, not a CA, no subject alternative names (a role with use_csr_sans would
// copy the CSR's), client authentication as its only extended key usage (server_flag,
// Vault's default, adds serverAuth) and no CA key usages. A hub may name any tokensvc-*
// role (pkiRole), so the role alone cannot be trusted to keep a device to its own name.
func checkVaultLeaf(leaf *x509.Certificate, cn string) error {
	switch {
	case leaf.Subject.CommonName != cn:
		return fmt.Errorf("CN %q, want %q", leaf.Subject.CommonName, cn)
	case leaf.IsCA:
		return errors.New("a CA certificate")
	case slices.ContainsFunc(leaf.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectAltName) }):
		return errors.New("a certificate with subject alternative names")
	case len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(leaf.UnknownExtKeyUsage) > 0:
		return fmt.Errorf("extended key usages %v, want client authentication only", leaf.ExtKeyUsage)
	case leaf.KeyUsage&caKeyUsages != 0:
		return errors.New("a certificate with CA key usages (certSign, cRLSign)")
	}
	return nil
}

// oidSubjectAltName is the subjectAltName extension (RFC 5280 4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
