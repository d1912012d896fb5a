package issuerkeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Backend holds the private halves of the ring's keys: in process (Local, kept in the
// ring's setting, which the embedded store encrypts) or in Vault Transit (Transit).
type Backend interface {
	// Create creates a key pair of alg for key kid. It returns the public key and the
	// private material the ring must keep for it (nil when the backend keeps the
	// private key itself). It returns store.ErrUnavailable (wrapped) when a remote
	// backend cannot be reached.
	Create(ctx context.Context, kid string, alg domain.IssuerAlg) (pub crypto.PublicKey, private []byte, err error)
	// Signer returns what signs with key kid; private is what Create returned for it.
	Signer(kid string, alg domain.IssuerAlg, pub crypto.PublicKey, private []byte) (DigestSigner, error)
	// Transit says the private keys live in Vault Transit.
	Transit() bool
}

// DigestSigner signs SHA-256 digests with one issuer key.
type DigestSigner interface {
	// SignDigest signs a SHA-256 digest: RSA PKCS#1 v1.5, or ECDSA P-256 as the
	// 64-byte r||s a JWS carries. Remote signers return store.ErrUnavailable (wrapped)
	// when they cannot be reached.
	SignDigest(ctx context.Context, digest []byte) ([]byte, error)
}

// Local returns the in-process backend: keys are generated here and their PKCS#8 DER
// is kept in the ring's store setting, so it is exactly as safe as that store — use it
// with the embedded store, which encrypts every record at rest, not with Vault KV
// (use Transit there).
func Local() Backend { return localBackend{} }

type localBackend struct{}

func (localBackend) Transit() bool { return false }

func (localBackend) Create(_ context.Context, _ string, alg domain.IssuerAlg) (crypto.PublicKey, []byte, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case domain.AlgRS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case domain.AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("create issuer key: algorithm %q: %w", alg, errBadAlg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("create %s issuer key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s issuer key: %w", alg, err)
	}
	return priv.Public(), der, nil
}

func (localBackend) Signer(kid string, alg domain.IssuerAlg, _ crypto.PublicKey, private []byte) (DigestSigner, error) {
	if len(private) == 0 {
		return nil, fmt.Errorf("issuer key %q: the ring holds no private key for it (created with Vault Transit?)", kid)
	}
	k, err := x509.ParsePKCS8PrivateKey(private)
	if err != nil {
		// The parse error never quotes the key.
		return nil, fmt.Errorf("issuer key %q: private key does not parse: %v", kid, err)
	}
	switch p := k.(type) {
	case *rsa.PrivateKey:
		if alg == domain.AlgRS256 {
			return rsaSigner{p}, nil
		}
	case *ecdsa.PrivateKey:
		if alg == domain.AlgES256 && p.Curve == elliptic.P256() {
			return ecSigner{p}, nil
		}
	}
	return nil, fmt.Errorf("issuer key %q: private key of type %T does not fit %s", kid, k, alg)
}

type rsaSigner struct{ k *rsa.PrivateKey }

func (s rsaSigner) SignDigest(_ context.Context, digest []byte) ([]byte, error) {
	return rsa.SignPKCS1v15(nil, s.k, crypto.SHA256, digest)
}

type ecSigner struct{ k *ecdsa.PrivateKey }

func (s ecSigner) SignDigest(_ context.Context, digest []byte) ([]byte, error) {
	r, ss, err := ecdsa.Sign(rand.Reader, s.k, digest)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	ss.FillBytes(out[32:])
	return out, nil
}

// TransitKeys is Vault Transit as the Transit backend uses it; *vaultstore.Store
// implements it.
type TransitKeys interface {
	// CreateIssuerKey creates the Transit key of issuer key kid (rsa-2048 or
	// ecdsa-p256) and returns its public key.
	CreateIssuerKey(ctx context.Context, kid string, alg domain.IssuerAlg) (crypto.PublicKey, error)
	// SignIssuerDigest signs a SHA-256 digest with the Transit key of kid: RSA PKCS#1
	// v1.5, or ECDSA as r||s.
	SignIssuerDigest(ctx context.Context, kid string, alg domain.IssuerAlg, digest []byte) ([]byte, error)
}

// Transit returns the backend whose keys are created, kept and used inside Vault
// Transit: the private keys never leave Vault.
func Transit(t TransitKeys) Backend { return transitBackend{t} }

type transitBackend struct{ t TransitKeys }

func (transitBackend) Transit() bool { return true }

func (b transitBackend) Create(ctx context.Context, kid string, alg domain.IssuerAlg) (crypto.PublicKey, []byte, error) {
	if alg != domain.AlgRS256 && alg != domain.AlgES256 {
		return nil, nil, fmt.Errorf("create issuer key: algorithm %q: %w", alg, errBadAlg)
	}
	pub, err := b.t.CreateIssuerKey(ctx, kid, alg)
	return pub, nil, err
}

func (b transitBackend) Signer(kid string, alg domain.IssuerAlg, _ crypto.PublicKey, _ []byte) (DigestSigner, error) {
	return transitSigner{t: b.t, kid: kid, alg: alg}, nil
}

type transitSigner struct {
	t   TransitKeys
	kid string
	alg domain.IssuerAlg
}

func (s transitSigner) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	return s.t.SignIssuerDigest(ctx, s.kid, s.alg, digest)
}

var errBadAlg = errors.New("want RS256 or ES256")

// cryptoSigner adapts a DigestSigner to crypto.Signer for x509.CreateCertificate,
// which wants ECDSA signatures in ASN.1.
type cryptoSigner struct {
	ctx context.Context
	pub crypto.PublicKey
	ds  DigestSigner
}

func (c cryptoSigner) Public() crypto.PublicKey { return c.pub }

func (c cryptoSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("issuer keys sign SHA-256 digests only, not %v", opts.HashFunc())
	}
	sig, err := c.ds.SignDigest(c.ctx, digest)
	if err != nil {
		return nil, err
	}
	if _, ok := c.pub.(*ecdsa.PublicKey); ok {
		return rawToASN1(sig)
	}
	return sig, nil
}

// ecdsaSig is the ASN.1 form of an ECDSA signature (RFC 3279).
type ecdsaSig struct{ R, S *big.Int }

// rawToASN1 turns a JWS ECDSA P-256 signature r||s into ASN.1.
func rawToASN1(raw []byte) ([]byte, error) {
	if len(raw) != 64 {
		return nil, fmt.Errorf("ECDSA signature has %d bytes, want 64", len(raw))
	}
	return asn1.Marshal(ecdsaSig{R: new(big.Int).SetBytes(raw[:32]), S: new(big.Int).SetBytes(raw[32:])})
}
