package devicecert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// CALifetime is how long a CA Local creates is valid.
const CALifetime = 10 * 365 * 24 * time.Hour

// SettingPrefix starts the store setting that holds a hub's CA (certificate and
// PKCS#8 private key): SettingPrefix + the hub's name.
const SettingPrefix = "device-ca/"

// Settings is where Local keeps its CAs; store.Store implements it. Keep them in the
// embedded store, which encrypts every setting at rest (as the issuer keys' local
// backend does); with Vault use the PKI engine (Vault), not Vault KV.
type Settings interface {
	// GetSetting returns a setting; store.ErrNotFound if unset.
	GetSetting(ctx context.Context, name string) ([]byte, error)
	// PutSetting stores a setting.
	PutSetting(ctx context.Context, name string, value []byte) error
}

// Local is the embedded CA: one self-signed ECDSA P-256 CA per hub, created on first
// use (or imported by the operator) and kept in a store setting.
type Local struct {
	st  Settings
	now func() time.Time
	mu  sync.Mutex // serialises creation and import
	cas sync.Map   // hub name → *localCA
}

var _ Authority = (*Local)(nil)

type localCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// storedCA is the setting's JSON form.
type storedCA struct {
	Certificate string `json:"certificate"` // PEM
	Key         []byte `json:"key"`         // PKCS#8 DER
}

// NewLocal returns the embedded CA keeping its hub CAs in st; now is the clock (nil:
// time.Now).
func NewLocal(st Settings, now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{st: st, now: now}
}

// Sign implements Authority: it signs the certificate s describes for csr's key with
// hub h's CA, creating the CA on first use.
func (l *Local) Sign(ctx context.Context, h domain.Hub, csr *x509.CertificateRequest, s Spec) (Signed, error) {
	ca, err := l.ca(ctx, h.Name)
	if err != nil {
		return Signed{}, err
	}
	tmpl, err := Template(s, csr.PublicKey, l.now(), ca.cert.NotAfter)
	if err != nil {
		return Signed{}, fmt.Errorf("hub %q: %w", h.Name, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return Signed{}, fmt.Errorf("sign device certificate on hub %q: %w", h.Name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return Signed{}, fmt.Errorf("sign device certificate on hub %q: %w", h.Name, err)
	}
	return Signed{Leaf: leaf, Chain: []*x509.Certificate{ca.cert}}, nil
}

// Chain implements Authority: hub h's CA certificate, created on first use (the role
// is Vault's; ignored).
func (l *Local) Chain(ctx context.Context, h domain.Hub, _ string) ([]*x509.Certificate, error) {
	ca, err := l.ca(ctx, h.Name)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{ca.cert}, nil
}

// Import makes certPEM and its private key keyPEM (PKCS#8, PKCS#1 or SEC 1) hub's CA,
// replacing the one it had; certificates signed before stay valid until they expire.
// The certificate must be a CA whose public key matches the key. Errors about the
// input wrap domain.ErrInvalid and never quote it.
func (l *Local) Import(ctx context.Context, hub string, certPEM, keyPEM []byte) error {
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.put(ctx, hub, ca); err != nil {
		return err
	}
	l.cas.Store(hub, ca)
	return nil
}

// ca returns hub's CA from memory, else from the store, else a new one.
func (l *Local) ca(ctx context.Context, hub string) (*localCA, error) {
	if ca, ok := l.cas.Load(hub); ok {
		return ca.(*localCA), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ca, ok := l.cas.Load(hub); ok {
		return ca.(*localCA), nil
	}
	raw, err := l.st.GetSetting(ctx, SettingPrefix+hub)
	switch {
	case err == nil:
		var s storedCA
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("CA of hub %q: stored form does not parse", hub)
		}
		ca, err := parseCA([]byte(s.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: s.Key}))
		if err != nil {
			return nil, fmt.Errorf("CA of hub %q: stored: %v", hub, err)
		}
		l.cas.Store(hub, ca)
		return ca, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("CA of hub %q: %w", hub, err)
	}
	ca, err := newCA(hub, l.now())
	if err != nil {
		return nil, err
	}
	if err := l.put(ctx, hub, ca); err != nil {
		return nil, err
	}
	l.cas.Store(hub, ca)
	return ca, nil
}

func (l *Local) put(ctx context.Context, hub string, ca *localCA) error {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("CA of hub %q: %w", hub, err)
	}
	raw, err := json.Marshal(storedCA{Certificate: string(encodeCerts(ca.cert)), Key: der})
	if err != nil {
		return err
	}
	if err := l.st.PutSetting(ctx, SettingPrefix+hub, raw); err != nil {
		return fmt.Errorf("store CA of hub %q: %w", hub, err)
	}
	return nil
}

// newCA creates a self-signed ECDSA P-256 CA for hub, valid for CALifetime.
func newCA(hub string, now time.Time) (*localCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := Serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tokensvc device CA " + hub, Organization: []string{"tokensvc"}},
		NotBefore:             now.Add(-Backdate).UTC().Truncate(time.Second),
		NotAfter:              now.Add(CALifetime).UTC().Truncate(time.Second),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA of hub %q: %w", hub, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &localCA{cert: cert, key: key}, nil
}

// parseCA reads a CA certificate and its private key, checking they belong together.
func parseCA(certPEM, keyPEM []byte) (*localCA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, domain.Invalid("certificate: not a PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, domain.Invalid("certificate: does not parse")
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, domain.Invalid("certificate: not a CA certificate (basic constraints CA and key usage certSign)")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, domain.Invalid("key: not a PEM private key")
	}
	key, err := domain.ParsePrivateKey(kb)
	if err != nil {
		return nil, domain.Invalid("key: %v", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, domain.Invalid("key: not a signing key")
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, domain.Invalid("key: does not match the certificate's public key")
	}
	return &localCA{cert: cert, key: signer}, nil
}

// encodeCerts returns certs as concatenated PEM blocks.
func encodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
