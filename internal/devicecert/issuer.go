package devicecert

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
)

// RefreshFraction is the share of a certificate's lifetime after which the device
// should ask for a new one (as for tokens).
const RefreshFraction = 0.8

// Authority is a hub's certificate authority.
type Authority interface {
	// Sign signs the certificate s describes for csr's public key (already checked by
	// ParseCSR) with hub h's CA. It returns errors wrapping store.ErrUnavailable when a
	// remote CA cannot be reached, ErrCAExpired when the CA can sign no more.
	Sign(ctx context.Context, h domain.Hub, csr *x509.CertificateRequest, s Spec) (Signed, error)
	// Chain returns hub h's CA chain, issuing CA first, for role (the hub's pkiRole,
	// "" for the default; what Sign's Spec.Role would be); errors as Sign.
	Chain(ctx context.Context, h domain.Hub, role string) ([]*x509.Certificate, error)
}

// Signed is a signed device certificate with its CA chain (issuing CA first).
type Signed struct {
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
}

// HubGetter is the part of the store the issuer reads.
type HubGetter interface {
	GetHub(ctx context.Context, name string) (domain.Hub, error)
}

// Issuer issues device certificates: hub policy, the kind's subject and profiles, the
// CSR checks, then the hub's CA.
type Issuer struct {
	hubs  HubGetter
	kinds *target.Set
	ca    Authority
	now   func() time.Time
}

// NewIssuer returns an Issuer reading hubs from hubs, asking their kinds for subject
// and profiles and signing with ca; now is the clock (nil: time.Now).
func NewIssuer(hubs HubGetter, kinds *target.Set, ca Authority, now func() time.Time) *Issuer {
	if now == nil {
		now = time.Now
	}
	return &Issuer{hubs: hubs, kinds: kinds, ca: ca, now: now}
}

// Request is what an authenticated device asks for.
type Request struct {
	// CSR is the PEM PKCS#10 request.
	CSR string
	// ModuleID asks for a module's certificate (kinds with modules).
	ModuleID string
	// TTL is the requested lifetime; zero means the hub default. Capped by policy.
	TTL time.Duration
}

// Issued is a device certificate with the settings to use it.
type Issued struct {
	Hub domain.Hub
	// Certificate is the leaf (PEM); Chain the CA chain (PEM, issuing CA first).
	Certificate string
	Chain       string
	// Serial is the serial number as lowercase hex without separators.
	Serial       string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	RefreshAfter time.Time
	Profile      target.CertificateProfile
}

// Issue issues a certificate for device d (already authenticated, not disabled or
// revoked) as r asks. A hub not in mode certificate and every CSR problem are errors
// wrapping domain.ErrInvalid; a module the device does not have wraps
// target.ErrForbidden; nothing is signed then.
func (i *Issuer) Issue(ctx context.Context, d domain.Device, r Request) (Issued, error) {
	hub, ck, err := i.certificateHub(ctx, d.Hub)
	if err != nil {
		return Issued{}, err
	}
	prof, err := ck.CertificateProfile(hub, d, r.ModuleID)
	if err != nil {
		return Issued{}, err
	}
	csr, err := ParseCSR(r.CSR, prof.Settings.KeyTypes)
	if err != nil {
		return Issued{}, err
	}
	now := i.now()
	signed, err := i.ca.Sign(ctx, hub, csr.Request, Spec{
		CommonName: prof.CommonName,
		TTL:        prof.Settings.Lifetime(r.TTL),
		Role:       prof.Settings.PKIRole,
	})
	if err != nil {
		return Issued{}, err
	}
	exp := signed.Leaf.NotAfter
	return Issued{
		Hub:          hub,
		Certificate:  string(encodeCerts(signed.Leaf)),
		Chain:        string(encodeCerts(signed.Chain...)),
		Serial:       signed.Leaf.SerialNumber.Text(16),
		IssuedAt:     now,
		ExpiresAt:    exp,
		RefreshAfter: now.Add(time.Duration(float64(exp.Sub(now)) * RefreshFraction)).Truncate(time.Second),
		Profile:      prof,
	}, nil
}

// ErrImportNotSupported means the hub's CA cannot be imported through the service:
// with Vault it lives in the PKI engine, where the operator imports it.
var ErrImportNotSupported = errors.New("this service's CA is Vault's PKI engine: import the CA there (pki/issuers/import/bundle), not through tokensvc")

// Importer is an Authority that takes an operator's CA for a hub (Local does).
type Importer interface {
	// Import makes certPEM and its key keyPEM hub's CA; errors about the input wrap
	// domain.ErrInvalid.
	Import(ctx context.Context, hub string, certPEM, keyPEM []byte) error
}

var _ Importer = (*Local)(nil)

// ImportCA makes an operator's CA the CA of hub name, which must be in mode
// certificate. It returns ErrImportNotSupported when the CA is not the service's own.
func (i *Issuer) ImportCA(ctx context.Context, name, certPEM, keyPEM string) error {
	hub, _, err := i.certificateHub(ctx, name)
	if err != nil {
		return err
	}
	imp, ok := i.ca.(Importer)
	if !ok {
		return ErrImportNotSupported
	}
	return imp.Import(ctx, hub.Name, []byte(certPEM), []byte(keyPEM))
}

// HubCA returns the PEM CA chain of hub name, which must be in mode certificate.
func (i *Issuer) HubCA(ctx context.Context, name string) (string, error) {
	hub, _, err := i.certificateHub(ctx, name)
	if err != nil {
		return "", err
	}
	cs, err := target.CertificateSettingsOf(hub)
	if err != nil {
		return "", fmt.Errorf("hub %q: stored settings: %v", hub.Name, err)
	}
	chain, err := i.ca.Chain(ctx, hub, cs.PKIRole)
	if err != nil {
		return "", err
	}
	return string(encodeCerts(chain...)), nil
}

// certificateHub reads hub name and its kind, refusing a hub not in mode certificate.
func (i *Issuer) certificateHub(ctx context.Context, name string) (domain.Hub, target.CertificateKind, error) {
	hub, err := i.hubs.GetHub(ctx, name)
	if err != nil {
		return domain.Hub{}, nil, fmt.Errorf("hub %q: %w", name, err)
	}
	if hub.Mode != domain.SignCertificate {
		return domain.Hub{}, nil, domain.Invalid("hub %q signs with mode %s and issues tokens (GET /token), not certificates", hub.Name, hub.Mode)
	}
	kind, err := i.kinds.Lookup(hub.Kind)
	if err != nil {
		return domain.Hub{}, nil, fmt.Errorf("hub %q has kind %q, which this build does not serve", hub.Name, hub.Kind)
	}
	ck, ok := kind.(target.CertificateKind)
	if !ok {
		return domain.Hub{}, nil, fmt.Errorf("hub %q: kind %s has no certificate mode", hub.Name, hub.Kind)
	}
	return hub, ck, nil
}
