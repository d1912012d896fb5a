package devicecert_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/testca"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestTemplate(t *testing.T) {
	key := mustKey(t, ec(elliptic.P256()))
	tests := []struct {
		name       string
		ttl        time.Duration
		caNotAfter time.Time
		wantAfter  time.Time
		wantErr    error
	}{
		{name: "lifetime as asked", ttl: 24 * time.Hour, caNotAfter: t0.Add(10 * 365 * 24 * time.Hour), wantAfter: t0.Add(24 * time.Hour)},
		{name: "capped by the CA", ttl: 24 * time.Hour, caNotAfter: t0.Add(time.Hour), wantAfter: t0.Add(time.Hour)},
		{name: "CA expired", ttl: 24 * time.Hour, caNotAfter: t0.Add(-time.Hour), wantErr: devicecert.ErrCAExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := devicecert.Template(devicecert.Spec{CommonName: "dev-1", TTL: tt.ttl}, key.Public(), t0, tt.caNotAfter)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.NotAfter.Equal(tt.wantAfter) {
				t.Errorf("NotAfter: got %s, want %s", c.NotAfter, tt.wantAfter)
			}
			if want := t0.Add(-devicecert.Backdate); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore: got %s, want %s", c.NotBefore, want)
			}
			if c.Subject.CommonName != "dev-1" || c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature ||
				len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("got CN %q CA %v KU %v EKU %v, want dev-1, not a CA, digitalSignature, clientAuth", c.Subject.CommonName, c.IsCA, c.KeyUsage, c.ExtKeyUsage)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %x: want positive, at most 128 bits", c.SerialNumber)
			}
		})
	}
}

func mustFileStore(t *testing.T, path string, key []byte) *filestore.Store {
	t.Helper()
	st, err := filestore.Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLocalPersists: the embedded CA is created once, survives reopening the store,
// and its private key is nowhere in the file in clear.
func TestLocalPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokensvc.db")
	mk := make([]byte, filestore.KeySize)
	_, _ = rand.Read(mk)
	hub := domain.Hub{Name: "certs"}
	now := func() time.Time { return t0 }

	st := mustFileStore(t, path, mk)
	ca := devicecert.NewLocal(st, now)
	devKey := mustKey(t, ec(elliptic.P256()))
	csr, err := devicecert.ParseCSR(testca.CSR(t, devKey, "ignored", "evil.example.com"), []string{"ecdsa-p256"})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := ca.Sign(t.Context(), hub, csr.Request, devicecert.Spec{CommonName: "dev-1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(signed.Leaf.DNSNames) != 0 || signed.Leaf.Subject.CommonName != "dev-1" {
		t.Errorf("leaf: got CN %q SANs %v, want dev-1 and none of the CSR's", signed.Leaf.Subject.CommonName, signed.Leaf.DNSNames)
	}
	first := signed.Chain[0]
	roots := x509.NewCertPool()
	roots.AddCert(first)
	if _, err := signed.Leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not chain to the hub's CA: %v", err)
	}
	raw, err := st.GetSetting(t.Context(), devicecert.SettingPrefix+hub.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The setting holds the PKCS#8 key; neither it nor the certificate appears in the file.
	if bytes.Contains(file, raw[len(raw)/2:len(raw)/2+32]) || bytes.Contains(file, first.Raw[:64]) || bytes.Contains(file, []byte("PRIVATE KEY")) {
		t.Error("the CA setting is in the store file in clear")
	}

	st2 := mustFileStore(t, path, mk)
	defer st2.Close()
	chain, err := devicecert.NewLocal(st2, now).Chain(t.Context(), hub, "")
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].Equal(first) {
		t.Error("after reopening the store the hub has another CA")
	}
	other, err := devicecert.NewLocal(st2, now).Chain(t.Context(), domain.Hub{Name: "other"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if other[0].Equal(first) {
		t.Error("two hubs share one CA")
	}
}

func TestLocalImport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokensvc.db")
	mk := make([]byte, filestore.KeySize)
	st := mustFileStore(t, path, mk)
	defer st.Close()
	ca := devicecert.NewLocal(st, func() time.Time { return t0 })
	root := testca.SelfSigned(t, testca.Spec{CommonName: "operator CA", CA: true, At: t0})
	leaf := root.Issue(t, testca.Spec{CommonName: "not a CA", At: t0})
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	tests := []struct {
		name      string
		cert, key []byte
		wantErr   bool
	}{
		{name: "CA and its key", cert: root.CertPEM(), key: root.KeyPEM()},
		{name: "not a CA", cert: leaf.CertPEM(), key: leaf.KeyPEM(), wantErr: true},
		{name: "key of another", cert: root.CertPEM(), key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}), wantErr: true},
		{name: "garbage", cert: []byte("x"), key: []byte("y"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ca.Import(t.Context(), "imported", tt.cert, tt.key)
			if tt.wantErr {
				if !errors.Is(err, domain.ErrInvalid) {
					t.Fatalf("got %v, want domain.ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			chain, err := ca.Chain(t.Context(), domain.Hub{Name: "imported"}, "")
			if err != nil || !chain[0].Equal(root.Cert) {
				t.Fatalf("chain after import: got %v, %v; want the imported CA", chain, err)
			}
		})
	}
}
