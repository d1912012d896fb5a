// Package testca is the one test certificate authority: throwaway ECDSA P-256 roots,
// intermediates, server and client certificates, self-signed or issued, in the forms
// tests hand to crypto/tls, to the service's configuration files or to a device
// record. Only tests import it; it is not a test file so tests of every package can.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// DefaultValidity is how far either side of Spec.At a certificate is valid when its
// Spec leaves NotBefore or NotAfter zero.
const DefaultValidity = 24 * time.Hour

// Spec describes a certificate to make; zero fields take the defaults documented on
// each.
type Spec struct {
	// CommonName is the subject common name; for a client certificate it names the device.
	CommonName string
	// Hosts are the DNS names and IP addresses (as text) a server certificate is for.
	Hosts []string
	// CA makes a certificate that can issue others (root or intermediate).
	CA bool
	// ExtKeyUsage is the extended key usage; nil means server authentication for a
	// certificate with Hosts, client authentication for any other leaf, none for a CA.
	ExtKeyUsage []x509.ExtKeyUsage
	// At is an instant the certificate must be valid at (default time.Now()), for
	// tests on a fake clock.
	At time.Time
	// NotBefore and NotAfter bound the validity; zero means DefaultValidity either
	// side of At.
	NotBefore, NotAfter time.Time
}

// Cert is a certificate and its private key.
type Cert struct {
	// Cert is the parsed certificate; Cert.Raw is its DER encoding.
	Cert *x509.Certificate
	// Key is the certificate's private key.
	Key *ecdsa.PrivateKey
}

// NewCA returns a self-signed root CA called name, valid DefaultValidity either side
// of now.
func NewCA(tb testing.TB, name string) *Cert {
	tb.Helper()
	return SelfSigned(tb, Spec{CommonName: name, CA: true})
}

// SelfSigned returns a certificate made from spec and signed by its own key: a root
// CA when spec.CA is set, else a leaf that is its own trust anchor (a pinned device
// certificate, or a server certificate clients trust directly).
func SelfSigned(tb testing.TB, spec Spec) *Cert {
	tb.Helper()
	return issue(tb, spec, nil)
}

// Issue returns a certificate made from spec and signed by c, which must be a CA.
func (c *Cert) Issue(tb testing.TB, spec Spec) *Cert {
	tb.Helper()
	return issue(tb, spec, c)
}

func issue(tb testing.TB, s Spec, parent *Cert) *Cert {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	at := s.At
	if at.IsZero() {
		at = time.Now()
	}
	if s.NotBefore.IsZero() {
		s.NotBefore = at.Add(-DefaultValidity)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = at.Add(DefaultValidity)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CommonName},
		NotBefore:             s.NotBefore,
		NotAfter:              s.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           s.ExtKeyUsage,
		BasicConstraintsValid: true,
	}
	for _, h := range s.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	switch {
	case s.CA:
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	case s.ExtKeyUsage == nil && len(s.Hosts) > 0:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case s.ExtKeyUsage == nil:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &Cert{Cert: cert, Key: key}
}

// CertPEM returns the certificate as a PEM CERTIFICATE block.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM returns the private key as a PEM PKCS#8 PRIVATE KEY block.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLS returns c as crypto/tls presents it, followed by chain (intermediates, leaf's
// issuer first).
func (c *Cert) TLS(chain ...*Cert) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, ic := range chain {
		tc.Certificate = append(tc.Certificate, ic.Cert.Raw)
	}
	return tc
}

// Pool returns a pool holding exactly the given certificates, as roots to trust.
func Pool(certs ...*Cert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Cert)
	}
	return p
}

// WriteCert writes the certificate as PEM to path (mode 0644) and returns path.
func (c *Cert) WriteCert(tb testing.TB, path string) string {
	tb.Helper()
	if err := os.WriteFile(path, c.CertPEM(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// WriteKey writes the private key as PEM PKCS#8 to path (mode 0600) and returns path.
func (c *Cert) WriteKey(tb testing.TB, path string) string {
	tb.Helper()
	if err := os.WriteFile(path, c.KeyPEM(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
