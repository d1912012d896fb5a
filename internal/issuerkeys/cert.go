package issuerkeys

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// certValidity is how long an issuer key's self-signed certificate is valid. The
// certificate only carries the public key to brokers that take keys as certificates
// (Event Grid namespaces); the key's life is governed by the ring's schedule, not by
// this date, so it is long enough never to be the reason a broker stops accepting it.
const certValidity = 10 * 365 * 24 * time.Hour

// selfSign returns a self-signed certificate (DER) for pub, signed by ds through the
// backend (so it works with keys that never leave Vault Transit).
func selfSign(ctx context.Context, issuer, kid string, pub crypto.PublicKey, ds DigestSigner, created time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	cn := "tokensvc issuer"
	if u, err := url.Parse(issuer); err == nil && u.Hostname() != "" {
		cn = u.Hostname()
	}
	created = created.UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, OrganizationalUnit: []string{"tokensvc issuer key " + kid}},
		NotBefore:             created,
		NotAfter:              created.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, cryptoSigner{ctx: ctx, pub: pub, ds: ds})
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate of issuer key %q: %w", kid, err)
	}
	return der, nil
}
