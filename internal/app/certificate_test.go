package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestCertificatesOnVault builds the service on a real Vault with a token holding only
// deploy/vault/tokensvc.hcl and the PKI engine set up as the operator steps say: a
// device's certificate is signed by the PKI role and chains to GET ca.pem, and while
// Vault hangs the device gets a 503 with Retry-After, not a 500.
func TestCertificatesOnVault(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.MountPKI(t, vaultstore.DefaultPKIMount, vaultstore.DefaultPKIRole)
	token := srv.PolicyToken(t, "../../deploy/vault/tokensvc.hcl", "1h")
	svc := apptest.Start(t, apptest.Options{Config: func(c *app.Config) {
		c.Store = "vault"
		c.Vault.Address, c.Vault.Token = srv.Addr, token
		c.Audience = "tokensvc-test"
	}})
	ctx := t.Context()
	mode := oapi.Certificate
	apptest.PostHub(t, svc.Admin, oapi.HubCreate{Name: "aws", Kind: oapi.Awsiot, Hostname: "abc-ats.iot.eu-west-1.amazonaws.com", Mode: &mode})
	dr := svc.CreateDevice(oapi.DeviceCreate{DeviceId: "thing-1", Hub: "aws", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	secret := []byte(*dr.Auth.Secret)
	jti := 0
	assertion := func() string {
		jti++
		now := time.Now()
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": "thing-1", "sub": "thing-1", "aud": "tokensvc-test",
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "j" + strconv.Itoa(jti),
		}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body := oapi.CertificateRequest{Csr: testca.CSR(t, key, "x", "evil.example.com")}
	r, err := svc.Client(assertion()).GetCertificateWithResponse(ctx, body)
	if err != nil || r.JSON200 == nil {
		t.Fatalf("certificate: %v %d %s", err, r.StatusCode(), r.Body)
	}
	b, _ := pem.Decode([]byte(r.JSON200.Certificate))
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := svc.Admin.GetHubCAWithResponse(ctx, "aws")
	if err != nil || ca.StatusCode() != 200 {
		t.Fatalf("ca.pem: %v %d %s", err, ca.StatusCode(), ca.Body)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.Body)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the Vault-signed certificate does not chain to ca.pem: %v", err)
	}
	if leaf.Subject.CommonName != "thing-1" || len(leaf.DNSNames) != 0 || leaf.SerialNumber.Text(16) != r.JSON200.SerialNumber {
		t.Errorf("leaf: CN %q SANs %v serial %x (response %s); want thing-1, none, the response's serial", leaf.Subject.CommonName, leaf.DNSNames, leaf.SerialNumber, r.JSON200.SerialNumber)
	}

	// With Vault the CA lives in the PKI engine: importing one through the service is a 409.
	mine := testca.NewCA(t, "operator CA")
	if r, err := svc.Admin.ImportHubCAWithResponse(ctx, "aws", oapi.HubCAImport{Certificate: string(mine.CertPEM()), Key: string(mine.KeyPEM())}); err != nil || r.StatusCode() != 409 {
		t.Errorf("import on Vault: got %v %d %s, want 409", err, r.StatusCode(), r.Body)
	}

	// The key cache holds the device and the hub now, so the PKI sign is the Vault
	// call that fails.
	srv.Pause()
	r, err = svc.Client(assertion()).GetCertificateWithResponse(ctx, body)
	srv.Resume()
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 503 || r.HTTPResponse.Header.Get("Retry-After") == "" {
		t.Errorf("while Vault hangs: got %d (Retry-After %q) %s, want 503 with Retry-After", r.StatusCode(), r.HTTPResponse.Header.Get("Retry-After"), r.Body)
	}
	if logs := svc.Logs.String(); !strings.Contains(logs, "pki sign") {
		t.Errorf("the 503 was not the PKI sign failing; log:\n%s", logs)
	}
}

// TestEmbeddedCAAcrossRestart: the embedded store's hub CA is created once and is the
// same after the service restarts on the same data directory; the store file holds
// it only encrypted.
func TestEmbeddedCAAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	var first []byte
	for i := range 2 {
		t.Run("start "+strconv.Itoa(i+1), func(t *testing.T) {
			svc := apptest.Start(t, apptest.Options{Config: func(c *app.Config) { c.DataDir = dir }})
			if i == 0 {
				mode := oapi.Certificate
				apptest.PostHub(t, svc.Admin, oapi.HubCreate{Name: "aws", Kind: oapi.Awsiot, Hostname: "abc-ats.iot.eu-west-1.amazonaws.com", Mode: &mode})
			}
			r, err := svc.Admin.GetHubCAWithResponse(t.Context(), "aws")
			if err != nil || r.StatusCode() != 200 {
				t.Fatalf("ca.pem: %v %d %s", err, r.StatusCode(), r.Body)
			}
			if first == nil {
				first = r.Body
			} else if string(r.Body) != string(first) {
				t.Error("after a restart the hub has another CA")
			}
		})
	}
	b, _ := pem.Decode(first)
	db, err := os.ReadFile(filepath.Join(dir, "tokensvc.db"))
	if err != nil {
		t.Fatal(err)
	}
	if b == nil || strings.Contains(string(db), "PRIVATE KEY") || strings.Contains(string(db), string(b.Bytes[:32])) {
		t.Error("the store file holds the CA in clear")
	}
}
