package credential_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
)

func pkcs8(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestParseAndSign(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	secret := "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123456789"
	tests := []struct {
		name    string
		file    []byte
		want    credential.Type
		verify  any
		wantTyp credential.Type
		wantErr bool
	}{
		{name: "hs256 secret with newline", file: []byte(secret + "\n"), want: credential.Auto, verify: []byte(secret), wantTyp: credential.HS256},
		{name: "es256 pkcs8", file: pkcs8(t, ec), want: credential.Auto, verify: &ec.PublicKey, wantTyp: credential.ES256},
		{name: "es256 sec1", file: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), want: credential.ES256, verify: &ec.PublicKey, wantTyp: credential.ES256},
		{name: "eddsa", file: pkcs8(t, ed), want: credential.EdDSA, verify: ed.Public(), wantTyp: credential.EdDSA},
		{name: "P-384 refused", file: pkcs8(t, ec384), want: credential.Auto, wantErr: true},
		{name: "type mismatch", file: pkcs8(t, ed), want: credential.ES256, wantErr: true},
		{name: "secret where a key is required", file: []byte(secret), want: credential.EdDSA, wantErr: true},
		{name: "short secret", file: []byte("short"), want: credential.Auto, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := credential.Parse(tt.file, tt.want)
			if tt.wantErr {
				if err == nil {
					t.Fatal("got nil, want an error")
				}
				if strings.Contains(err.Error(), secret) {
					t.Error("the error quotes the file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Type() != tt.wantTyp {
				t.Errorf("type: got %s, want %s", c.Type(), tt.wantTyp)
			}
			now := time.Now()
			a, err := c.Assertion("dev-1", "tokensvc", now)
			if err != nil {
				t.Fatal(err)
			}
			claims := &jwt.RegisteredClaims{}
			if _, err := jwt.ParseWithClaims(a, claims, func(*jwt.Token) (any, error) { return tt.verify, nil },
				jwt.WithAudience("tokensvc"), jwt.WithIssuedAt()); err != nil {
				t.Fatalf("assertion does not verify: %v", err)
			}
			if claims.Issuer != "dev-1" || claims.Subject != "dev-1" || claims.ID == "" || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 5*time.Minute {
				t.Errorf("claims: got %+v", claims)
			}
		})
	}
}

func TestLoadRefusesLooseModes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("s3cr3t-s3cr3t-s3cr3t-s3cr3t"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := credential.Load(p, credential.Auto); !errors.Is(err, credential.ErrPermissions) {
		t.Fatalf("mode 0640: got %v, want ErrPermissions", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := credential.Load(p, credential.Auto); err != nil {
		t.Fatalf("mode 0600: got %v, want nil", err)
	}
}

// TestNonceAssertion: the nonce stands in for every time claim.
func TestNonceAssertion(t *testing.T) {
	c, err := credential.Parse([]byte("s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123456789"), credential.HS256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NonceAssertion("dev-1", "tokensvc", "n0nce")
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(s, claims); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"iss": "dev-1", "sub": "dev-1", "aud": []any{"tokensvc"}, "nonce": "n0nce"}
	if len(claims) != len(want) {
		t.Errorf("claims: got %v, want exactly %v", claims, want)
	}
	for k, v := range want {
		if got := claims[k]; !reflect.DeepEqual(got, v) {
			t.Errorf("claim %s: got %v, want %v", k, got, v)
		}
	}
	if _, err := c.NonceAssertion("dev-1", "tokensvc", ""); err == nil {
		t.Error("empty nonce: got nil error, want one")
	}
}
