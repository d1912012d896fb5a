package devicecert

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Backdate is how far before issuing a certificate's NotBefore lies, so a device whose
// clock runs a little behind (or a broker's) does not find it not yet valid.
const Backdate = 5 * time.Minute

// ErrCAExpired means the hub's CA has expired (or expires within a minute): it can sign
// nothing more until the operator replaces it.
var ErrCAExpired = errors.New("the hub's CA certificate has expired")

// Spec is what the service decides about a device certificate; nothing else in it
// comes from the CSR but the public key.
type Spec struct {
	// CommonName is the subject CN, from the kind (the device ID, or deviceId/moduleId).
	CommonName string
	// TTL is the lifetime, the hub's policy already applied.
	TTL time.Duration
	// Role is the Vault PKI role to sign with; "" for the default. Local ignores it.
	Role string
}

// Template returns the certificate s describes for key pub, issued at now by a CA
// valid until caNotAfter: subject CN only, key usage digitalSignature, extended key
// usage clientAuth, not a CA, NotBefore backdated by Backdate, NotAfter now+TTL but
// never beyond the CA's own, and a random 128-bit serial number.
func Template(s Spec, pub crypto.PublicKey, now, caNotAfter time.Time) (*x509.Certificate, error) {
	notAfter := now.Add(s.TTL)
	if notAfter.After(caNotAfter) {
		notAfter = caNotAfter
	}
	if notAfter.Sub(now) < time.Minute {
		return nil, fmt.Errorf("CA valid until %s: %w", caNotAfter.Format(time.RFC3339), ErrCAExpired)
	}
	serial, err := Serial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CommonName},
		NotBefore:             now.Add(-Backdate).UTC().Truncate(time.Second),
		NotAfter:              notAfter.UTC().Truncate(time.Second),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		PublicKey:             pub,
	}, nil
}

// Serial returns a random positive 128-bit serial number.
func Serial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}
