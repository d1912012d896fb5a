package domain_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/testca"
)

func TestAlgorithmPinsOnePerJWTType(t *testing.T) {
	tests := []struct {
		typ    domain.CredentialType
		want   string
		wantOK bool
	}{
		{domain.CredHS256, "HS256", true},
		{domain.CredES256, "ES256", true},
		{domain.CredEdDSA, "EdDSA", true},
		{domain.CredX509, "", false},
		{domain.CredX509CA, "", false},
		{"none", "", false},
	}
	for _, tt := range tests {
		got, ok := tt.typ.Algorithm()
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: got %q %v, want %q %v", tt.typ, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCredentialPrepare(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	fp := strings.Repeat("ab", 32)
	tests := []struct {
		name       string
		cred       domain.Credential
		wantSecret bool
		wantErr    error
	}{
		{"hs256 gets a secret", domain.Credential{Type: domain.CredHS256}, true, nil},
		{"hs256 with a public key", domain.Credential{Type: domain.CredHS256, PublicKey: testca.PublicKeyPEM(t, &p256.PublicKey)}, false, domain.ErrInvalid},
		{"es256 P-256", domain.Credential{Type: domain.CredES256, PublicKey: testca.PublicKeyPEM(t, &p256.PublicKey)}, false, nil},
		{"es256 P-384 refused", domain.Credential{Type: domain.CredES256, PublicKey: testca.PublicKeyPEM(t, &p384.PublicKey)}, false, domain.ErrInvalid},
		{"eddsa Ed25519", domain.Credential{Type: domain.CredEdDSA, PublicKey: testca.PublicKeyPEM(t, edPub)}, false, nil},
		{"eddsa with an EC key", domain.Credential{Type: domain.CredEdDSA, PublicKey: testca.PublicKeyPEM(t, &p256.PublicKey)}, false, domain.ErrInvalid},
		{"x509 pinned", domain.Credential{Type: domain.CredX509, CertFingerprint: fp}, false, nil},
		{"x509 upper-case fingerprint", domain.Credential{Type: domain.CredX509, CertFingerprint: strings.ToUpper(fp)}, false, domain.ErrInvalid},
		{"x509-ca with a fingerprint", domain.Credential{Type: domain.CredX509CA, CertFingerprint: fp}, false, domain.ErrInvalid},
		{"x509-ca", domain.Credential{Type: domain.CredX509CA}, false, nil},
		{"unknown type", domain.Credential{Type: "rs256"}, false, domain.ErrInvalid},
		{"caller-supplied secret is dropped", domain.Credential{Type: domain.CredX509CA, Secret: []byte("x")}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cred
			secret, err := c.Prepare()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := secret != ""; got != tt.wantSecret {
				t.Fatalf("got secret %v, want %v", got, tt.wantSecret)
			}
			if string(c.Secret) != secret {
				t.Fatalf("got stored secret %q, want the returned one", c.Secret)
			}
		})
	}
}
