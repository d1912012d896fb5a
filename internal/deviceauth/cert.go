package deviceauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// maxPeerCerts bounds the chain a client may present; real device chains are two or
// three certificates long.
const maxPeerCerts = 8

// WithClientCA makes certificates issued by pool authenticate devices whose credential
// is x509-ca. Without it no x509-ca device is ever authenticated.
func WithClientCA(pool *x509.CertPool) Option {
	return func(v *Verifier) { v.clientCA = pool }
}

// VerifyCert authenticates a device by the TLS client certificate chain it presented
// (leaf first, as in tls.ConnectionState.PeerCertificates; the TLS handshake has
// already proved the client holds the leaf's private key). The leaf's subject common
// name selects the device, as an assertion's sub does; then the device's credential
// decides:
//
//   - x509: the leaf's SHA-256 fingerprint must be the registered one;
//   - x509-ca: the chain must verify against the client CA (WithClientCA) for client
//     authentication at the service's current time;
//   - any JWT credential: refused, so a certificate can never stand in for a device
//     that signs assertions.
//
// Both certificate types also need the leaf valid now, its NotBefore not before the
// device's revocation time, and the device enabled. It returns an error wrapping
// ErrUnauthenticated for every failure of proof, and store.ErrUnavailable (wrapped)
// when the device could not be looked up.
func (v *Verifier) VerifyCert(ctx context.Context, certs []*x509.Certificate) (domain.Device, error) {
	if len(certs) == 0 {
		return domain.Device{}, fmt.Errorf("%w: no client certificate", ErrUnauthenticated)
	}
	if len(certs) > maxPeerCerts {
		return domain.Device{}, fmt.Errorf("%w: client certificate chain longer than %d", ErrUnauthenticated, maxPeerCerts)
	}
	leaf := certs[0]
	id := leaf.Subject.CommonName
	if !domain.ValidID(id) {
		return domain.Device{}, fmt.Errorf("%w: certificate common name is not a device ID", ErrUnauthenticated)
	}
	dev, err := v.devices.GetDevice(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return domain.Device{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	case err != nil:
		return domain.Device{}, fmt.Errorf("look up device: %w", err)
	}
	now := v.now()
	switch dev.Auth.Type {
	case domain.CredX509:
		// The fingerprint is not a secret, so a plain comparison leaks nothing.
		if domain.CertFingerprint(leaf.Raw) != dev.Auth.CertFingerprint {
			return domain.Device{}, fmt.Errorf("%w: certificate fingerprint is not the registered one", ErrUnauthenticated)
		}
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return domain.Device{}, fmt.Errorf("%w: certificate not valid at %v", ErrUnauthenticated, now)
		}
	case domain.CredX509CA:
		if v.clientCA == nil {
			return domain.Device{}, fmt.Errorf("%w: no client CA configured", ErrUnauthenticated)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		// Verify checks the validity period of every certificate at now, the chain up to
		// the client CA and that the chain allows client authentication.
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         v.clientCA,
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err != nil {
			return domain.Device{}, fmt.Errorf("%w: certificate chain: %v", ErrUnauthenticated, err)
		}
	default:
		return domain.Device{}, fmt.Errorf("%w: credential %q does not accept certificates", ErrUnauthenticated, dev.Auth.Type)
	}
	if dev.Disabled {
		return domain.Device{}, fmt.Errorf("%w: device disabled", ErrUnauthenticated)
	}
	if leaf.NotBefore.Before(dev.RevokedAt) {
		return domain.Device{}, fmt.Errorf("%w: certificate issued before the device was revoked", ErrUnauthenticated)
	}
	return dev, nil
}
