// Package devicecert issues short-lived X.509 client certificates to devices of hubs in
// mode certificate (POST /token/certificate). The device generates its key and sends a
// PKCS#10 request; this package checks the request (proof of possession, key type
// against the hub's allow-list, size), decides the certificate itself (subject from the
// kind, key usage, lifetime; nothing from the request but its public key) and has the
// hub's CA sign it: Local, a CA per hub kept encrypted in the embedded store, or Vault,
// the Vault PKI secrets engine, where the CA key never leaves Vault.
package devicecert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
)

// MaxCSRBytes bounds a CSR's PEM text (the API's maxLength): an RSA-4096 request is
// under 2 KiB.
const MaxCSRBytes = 16 << 10

// CSR is a checked certificate signing request.
type CSR struct {
	// Request is the parsed request; its signature verified.
	Request *x509.CertificateRequest
	// KeyType is its key's type as the API spells it (target.KeyECDSAP256, …).
	KeyType string
}

// ParseCSR reads a PEM PKCS#10 request and checks it: one CERTIFICATE REQUEST block,
// a key of a type in allowed, and a signature that verifies with that key (the device
// holds the private key). Every refusal wraps domain.ErrInvalid with a message that
// names the problem and never echoes the input.
func ParseCSR(text string, allowed []string) (CSR, error) {
	if len(text) > MaxCSRBytes {
		return CSR{}, domain.Invalid("csr: larger than %d bytes", MaxCSRBytes)
	}
	block, rest := pem.Decode([]byte(text))
	if block == nil {
		return CSR{}, domain.Invalid("csr: not a PEM CERTIFICATE REQUEST block")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return CSR{}, domain.Invalid("csr: the PEM block is not a CERTIFICATE REQUEST")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return CSR{}, domain.Invalid("csr: one CERTIFICATE REQUEST block only, nothing after it")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		if strings.Contains(err.Error(), "elliptic curve") {
			return CSR{}, domain.Invalid("csr: the key's elliptic curve is not accepted; ECDSA keys are P-256 or P-384")
		}
		return CSR{}, domain.Invalid("csr: not a valid PKCS#10 request")
	}
	kt, err := keyType(req.PublicKey)
	if err != nil {
		return CSR{}, err
	}
	if !slices.Contains(allowed, kt) {
		return CSR{}, domain.Invalid("csr: key type %s is not accepted by this hub (certificateKeyTypes: %s)", kt, strings.Join(allowed, ", "))
	}
	if err := req.CheckSignature(); err != nil {
		return CSR{}, domain.Invalid("csr: its signature does not verify with its own key (proof of possession failed)")
	}
	return CSR{Request: req, KeyType: kt}, nil
}

// keyType names pub's type, refusing keys no hub accepts.
func keyType(pub any) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return target.KeyECDSAP256, nil
		case elliptic.P384():
			return target.KeyECDSAP384, nil
		}
		return "", domain.Invalid("csr: ECDSA curve %s is not accepted; ECDSA keys are P-256 or P-384", k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch bits := k.N.BitLen(); {
		case bits < 2048:
			return "", domain.Invalid("csr: RSA key of %d bits is too small; at least 2048", bits)
		case bits == 2048:
			return target.KeyRSA2048, nil
		case bits == 3072:
			return target.KeyRSA3072, nil
		case bits == 4096:
			return target.KeyRSA4096, nil
		default:
			return "", domain.Invalid("csr: RSA key of %d bits; RSA keys are 2048, 3072 or 4096 bits", bits)
		}
	case ed25519.PublicKey:
		return "", domain.Invalid("csr: Ed25519 keys are not accepted (brokers' TLS stacks lack them); use ECDSA P-256")
	}
	return "", domain.Invalid("csr: the key's algorithm is not accepted; use ECDSA P-256/P-384 or RSA 2048+")
}
