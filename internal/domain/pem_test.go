package domain_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/testca"
)

func TestParsePrivateKey(t *testing.T) {
	ec := testca.P256Key(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		block   pem.Block
		wantErr string
	}{
		{name: "pkcs8", block: pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}},
		{name: "sec1", block: pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}},
		{name: "pkcs1", block: pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}},
		{name: "not a key", block: pem.Block{Type: "CERTIFICATE", Bytes: pkcs8}, wantErr: `PEM block "CERTIFICATE" is not a private key`},
		{name: "garbage", block: pem.Block{Type: "PRIVATE KEY", Bytes: []byte("s3cr3t-bytes")}, wantErr: "private key does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := domain.ParsePrivateKey(&tt.block)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || key == nil {
				t.Fatalf("got %v, %v; want a key", key, err)
			}
		})
	}
}

func TestParseCertificates(t *testing.T) {
	ca := testca.NewCA(t, "pem test CA")
	other := testca.NewCA(t, "pem test CA 2")
	junk := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}))
	got, err := domain.ParseCertificates(string(ca.CertPEM()) + junk + string(other.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(ca.Cert) || !got[1].Equal(other.Cert) {
		t.Fatalf("got %d certificates, want the two CAs in order", len(got))
	}
	if got, err := domain.ParseCertificates("no PEM here"); err != nil || len(got) != 0 {
		t.Fatalf("no PEM: got %v, %v; want none and no error", got, err)
	}
	bad := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}))
	if _, err := domain.ParseCertificates(bad); err == nil || !strings.HasPrefix(err.Error(), "a certificate does not parse") {
		t.Fatalf("garbage: got %v, want a parse error", err)
	}
}
