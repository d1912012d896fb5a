package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

var certSerial atomic.Int64

// testCert is a certificate with its key, as a TLS client presents it.
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certSpec describes a certificate to make; zero times mean the env clock ± a day.
type certSpec struct {
	cn        string
	ca        bool
	notBefore time.Time
	notAfter  time.Time
	eku       []x509.ExtKeyUsage
}

// mustCert makes a certificate signed by parent, or self-signed when parent is nil.
func mustCert(tb testing.TB, now time.Time, s certSpec, parent *testCert) *testCert {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if s.notBefore.IsZero() {
		s.notBefore = now.Add(-24 * time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(certSerial.Add(1)),
		Subject:               pkix.Name{CommonName: s.cn},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           s.eku,
		BasicConstraintsValid: true,
	}
	if s.ca {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else if s.eku == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}

// certClient returns a generated client that presents chain (leaf first; none when
// empty) in the TLS handshake and trusts the env's server.
func (e *env) certClient(chain ...*testCert) *oapi.ClientWithResponses {
	e.t.Helper()
	tr := e.http.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	if len(chain) > 0 {
		tc := tls.Certificate{PrivateKey: chain[0].key, Leaf: chain[0].cert}
		for _, c := range chain {
			tc.Certificate = append(tc.Certificate, c.cert.Raw)
		}
		tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc, nil }
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return mustClientOf(e.t, e.url, "", &http.Client{Transport: tr})
}

// TestCertificateAuthorizationMatrix is TestDeviceAuthorizationMatrix for mutual TLS:
// which certificate authenticates which device, and that certificate and JWT
// credentials never stand in for each other.
func TestCertificateAuthorizationMatrix(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) // mustEnv's clock
	ca := mustCert(t, now, certSpec{cn: "device CA", ca: true}, nil)
	inter := mustCert(t, now, certSpec{cn: "line 3 intermediate", ca: true}, ca)
	otherCA := mustCert(t, now, certSpec{cn: "someone else's CA", ca: true}, nil)
	e := mustEnvWith(t, envOptions{mtls: true, clientCA: []*testCert{ca}})
	if !e.clock.Now().Equal(now) {
		t.Fatalf("env clock: got %v, want %v", e.clock.Now(), now)
	}
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})

	pinned := mustCert(t, now, certSpec{cn: "pinned"}, nil)
	pinnedFP := domain.CertFingerprint(pinned.cert.Raw)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "pinned", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &pinnedFP}})
	stale := mustCert(t, now, certSpec{cn: "pinned-stale", notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)}, nil)
	staleFP := domain.CertFingerprint(stale.cert.Raw)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "pinned-stale", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &staleFP}})
	for _, id := range []string{"issued", "issued-2"} {
		e.mustDevice(oapi.DeviceCreate{DeviceId: id, Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509Ca}})
	}
	e.mustDevice(oapi.DeviceCreate{DeviceId: "issued-off", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509Ca}, Disabled: ptr(true)})
	e.mustDevice(oapi.DeviceCreate{DeviceId: "issued-revoked", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509Ca}})
	alice := e.mustDevice(oapi.DeviceCreate{DeviceId: "alice", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	aliceSecret := []byte(*alice.Auth.Secret)

	// Revoked now: certificates issued before now are refused, later ones accepted.
	if resp, err := e.admin.RevokeDeviceWithResponse(t.Context(), "issued-revoked"); err != nil || resp.JSON200 == nil {
		t.Fatalf("revoke: got %v %v, want 200", resp, err)
	}
	issuedAfterRevoke := mustCert(t, now, certSpec{cn: "issued-revoked", notBefore: now.Add(time.Second)}, ca)
	e.clock.Advance(time.Minute)

	withJWT := func(tok string) oapi.RequestEditorFn { return bearer(tok) }
	hsFor := func(id string) string { return mustSign(t, jwt.SigningMethodHS256, e.claims(id), aliceSecret) }
	tests := []struct {
		name       string
		chain      []*testCert
		jwt        string
		wantStatus int
		wantDevice string
	}{
		{"pinned self-signed certificate", []*testCert{pinned}, "", 200, "pinned"},
		{"CA-issued certificate", []*testCert{mustCert(t, now, certSpec{cn: "issued"}, ca)}, "", 200, "issued"},
		{"CA-issued through an intermediate", []*testCert{mustCert(t, now, certSpec{cn: "issued"}, inter), inter}, "", 200, "issued"},
		{"the common name selects the device", []*testCert{mustCert(t, now, certSpec{cn: "issued-2"}, ca)}, "", 200, "issued-2"},
		{"CA-issued after a revocation", []*testCert{issuedAfterRevoke}, "", 200, "issued-revoked"},
		{"JWT device without a certificate", nil, hsFor("alice"), 200, "alice"},
		{"JWT device with a certificate too", []*testCert{mustCert(t, now, certSpec{cn: "alice"}, ca)}, hsFor("alice"), 200, "alice"},

		{"pinned device, other certificate with its name", []*testCert{mustCert(t, now, certSpec{cn: "pinned"}, nil)}, "", 401, ""},
		{"expired pinned certificate", []*testCert{stale}, "", 401, ""},
		{"pinned device, CA-issued certificate with its name", []*testCert{mustCert(t, now, certSpec{cn: "pinned"}, ca)}, "", 401, ""},
		{"CA-issued for a JWT device", []*testCert{mustCert(t, now, certSpec{cn: "alice"}, ca)}, "", 401, ""},
		{"CA-issued for an unknown device", []*testCert{mustCert(t, now, certSpec{cn: "mallory"}, ca)}, "", 401, ""},
		{"CA-issued, common name not a device ID", []*testCert{mustCert(t, now, certSpec{cn: "has space"}, ca)}, "", 401, ""},
		{"issued by another CA", []*testCert{mustCert(t, now, certSpec{cn: "issued"}, otherCA)}, "", 401, ""},
		{"self-signed for a CA device", []*testCert{mustCert(t, now, certSpec{cn: "issued"}, nil)}, "", 401, ""},
		{"intermediate not presented", []*testCert{mustCert(t, now, certSpec{cn: "issued"}, inter)}, "", 401, ""},
		{"the CA certificate itself", []*testCert{ca}, "", 401, ""},
		{"server-auth-only certificate", []*testCert{mustCert(t, now, certSpec{cn: "issued", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca)}, "", 401, ""},
		{"expired CA-issued certificate", []*testCert{mustCert(t, now, certSpec{cn: "issued", notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)}, ca)}, "", 401, ""},
		{"CA-issued certificate not valid yet", []*testCert{mustCert(t, now, certSpec{cn: "issued", notBefore: now.Add(time.Hour)}, ca)}, "", 401, ""},
		{"disabled device", []*testCert{mustCert(t, now, certSpec{cn: "issued-off"}, ca)}, "", 401, ""},
		{"certificate issued before the revocation", []*testCert{mustCert(t, now, certSpec{cn: "issued-revoked"}, ca)}, "", 401, ""},
		{"no certificate and no JWT", nil, "", 401, ""},
		{"certificate device presenting a JWT", nil, hsFor("pinned"), 401, ""},
		{"certificate device presenting a JWT with its certificate", []*testCert{pinned}, hsFor("pinned"), 401, ""},
		{"CA device presenting a JWT", nil, hsFor("issued"), 401, ""},
	}
	var unauthorizedBody string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var editors []oapi.RequestEditorFn
			if tt.jwt != "" {
				editors = append(editors, withJWT(tt.jwt))
			}
			resp, err := e.certClient(tt.chain...).GetTokenWithResponse(t.Context(), &oapi.GetTokenParams{}, editors...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if tt.wantStatus == 200 {
				if want := hubHost + "/devices/" + tt.wantDevice; resp.JSON200.Resource != want {
					t.Errorf("resource: got %q, want %q", resp.JSON200.Resource, want)
				}
				return
			}
			if strings.Contains(string(resp.Body), "SharedAccessSignature") {
				t.Errorf("a refusal carries a token: %s", resp.Body)
			}
			var p oapi.Problem
			if err := json.Unmarshal(resp.Body, &p); err != nil {
				t.Fatal(err)
			}
			if unauthorizedBody == "" {
				unauthorizedBody = deref(p.Detail)
			} else if deref(p.Detail) != unauthorizedBody {
				t.Errorf("detail: got %q, want the same as every other 401 (%q)", deref(p.Detail), unauthorizedBody)
			}
		})
	}
}

// TestCertificateIgnoredWithoutMutualTLS: over TLS without -client-auth optional a
// certificate proves nothing (the server does not even ask for one).
func TestCertificateIgnoredWithoutMutualTLS(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	e := mustEnvWith(t, envOptions{tls: true})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	pinned := mustCert(t, now, certSpec{cn: "pinned"}, nil)
	fp := domain.CertFingerprint(pinned.cert.Raw)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "pinned", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &fp}})
	resp, err := e.certClient(pinned).GetTokenWithResponse(t.Context(), &oapi.GetTokenParams{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("got %d %s, want 401", resp.StatusCode(), resp.Body)
	}
}

// TestCertificateDeviceRateLimit: a device authenticated by certificate spends its own
// bucket, as one authenticated by assertion does.
func TestCertificateDeviceRateLimit(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	e := mustEnvWith(t, envOptions{mtls: true, config: func(c *app.Config) {
		c.Limits = limits.Config{DeviceRate: 0.001, DeviceBurst: 1}
	}})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	var clients []*oapi.ClientWithResponses
	for _, id := range []string{"pin-a", "pin-b"} {
		c := mustCert(t, now, certSpec{cn: id}, nil)
		fp := domain.CertFingerprint(c.cert.Raw)
		e.mustDevice(oapi.DeviceCreate{DeviceId: id, Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &fp}})
		clients = append(clients, e.certClient(c))
	}
	get := func(c *oapi.ClientWithResponses) int {
		t.Helper()
		resp, err := c.GetTokenWithResponse(context.Background(), &oapi.GetTokenParams{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode()
	}
	for i, want := range []struct {
		client int
		status int
	}{{0, 200}, {0, 429}, {1, 200}} {
		if got := get(clients[want.client]); got != want.status {
			t.Errorf("request %d by device %d: got %d, want %d", i, want.client, got, want.status)
		}
	}
}

func TestCreateCertificateDevice(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	fp := strings.Repeat("ab", 32)
	_, pub := mustECKey(t)
	tests := []struct {
		name       string
		auth       oapi.CredentialCreate
		wantStatus int
	}{
		{"x509 with fingerprint", oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &fp}, 201},
		{"x509-ca", oapi.CredentialCreate{Type: oapi.X509Ca}, 201},
		{"x509 without fingerprint", oapi.CredentialCreate{Type: oapi.X509}, 400},
		{"x509 with uppercase fingerprint", oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: ptr(strings.ToUpper(fp))}, 400},
		{"x509 with short fingerprint", oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: ptr(fp[:62])}, 400},
		{"x509 with public key", oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &fp, PublicKey: &pub}, 400},
		{"x509-ca with fingerprint", oapi.CredentialCreate{Type: oapi.X509Ca, CertFingerprint: &fp}, 400},
		{"hs256 with fingerprint", oapi.CredentialCreate{Type: oapi.Hs256, CertFingerprint: &fp}, 400},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "cert-dev-" + string(rune('a'+i))
			resp, err := e.admin.CreateDeviceWithResponse(t.Context(), oapi.DeviceCreate{DeviceId: id, Hub: "main", Auth: tt.auth})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if tt.wantStatus != 201 {
				return
			}
			if resp.JSON201.Auth.Secret != nil {
				t.Errorf("secret: got %q, want none for %s", *resp.JSON201.Auth.Secret, tt.auth.Type)
			}
			got, err := e.admin.GetDeviceWithResponse(t.Context(), id)
			if err != nil || got.JSON200 == nil {
				t.Fatalf("get: got %v %v, want 200", got, err)
			}
			if a := got.JSON200.Auth; a.Type != tt.auth.Type || deref(a.CertFingerprint) != deref(tt.auth.CertFingerprint) {
				t.Errorf("auth: got %s %q, want %s %q", a.Type, deref(a.CertFingerprint), tt.auth.Type, deref(tt.auth.CertFingerprint))
			}
		})
	}
}
