package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"time"
)

// SelfSigned is `tokenbench selfsigned -cert FILE -key FILE`: it writes a throwaway
// ECDSA P-256 server certificate for loopback (127.0.0.1, ::1, localhost), valid for a
// day, and its key (0600). The certificate is its own CA, so it is also what the
// storm's -cacert trusts.
func SelfSigned(args []string, stderr io.Writer) error {
	fs := NewFlagSet("selfsigned", stderr)
	certFile := fs.String("cert", "", "PEM certificate to write")
	keyFile := fs.String("key", "", "PEM private key to write (0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *certFile == "" || *keyFile == "" || fs.NArg() > 0 {
		return errors.New("selfsigned: want -cert FILE -key FILE")
	}
	certPEM, keyPEM, err := NewSelfSigned(time.Now())
	if err != nil {
		return err
	}
	if err := os.WriteFile(*keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("selfsigned: %w", err)
	}
	if err := os.WriteFile(*certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("selfsigned: %w", err)
	}
	return nil
}

// NewSelfSigned returns a PEM certificate and PEM PKCS#8 key for loopback.
func NewSelfSigned(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tokenbench loopback"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// TLSServerConfig loads a certificate and key for a TLS baseline.
func TLSServerConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}
