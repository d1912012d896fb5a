// Package testpeer runs the real peers the agent's tests talk to: tokensvc itself
// (built by app.New through internal/apptest, with a key-store outage switch), an MQTT broker
// (mochi-mqtt) and an AMQP 1.0 peer (rhea, run with node) that both check SAS tokens
// the way IoT Hub does, and a CA that issues their TLS certificates. Only tests import it.
package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/tokensvc/tokensvc/internal/testca"
)

// CA is a throwaway certificate authority (a testca root).
type CA struct {
	ca *testca.Cert
	// PEM is the CA certificate.
	PEM string
}

// NewCA creates a CA named name.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	ca := testca.NewCA(tb, name)
	return &CA{ca: ca, PEM: string(ca.CertPEM())}
}

// WritePEM writes the CA certificate to a file in dir and returns its path.
func (ca *CA) WritePEM(tb testing.TB, dir string) string {
	tb.Helper()
	return ca.ca.WriteCert(tb, filepath.Join(dir, "ca.pem"))
}

// Leaf is a server certificate with its PEM forms.
type Leaf struct {
	TLS     tls.Certificate
	CertPEM string
	KeyPEM  string
}

// Issue returns a server certificate for names (DNS names or IP addresses).
func (ca *CA) Issue(tb testing.TB, names ...string) Leaf {
	tb.Helper()
	c := ca.ca.Issue(tb, testca.Spec{CommonName: names[0], Hosts: names})
	return Leaf{TLS: c.TLS(), CertPEM: string(c.CertPEM()), KeyPEM: string(c.KeyPEM())}
}

func newPool(ca *CA) *x509.CertPool { return testca.Pool(ca.ca) }

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool { return newPool(ca) }
