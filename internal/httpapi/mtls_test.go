package httpapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// mustCert makes a certificate valid around now (the env's clock), signed by parent or
// self-signed when parent is nil.
func mustCert(tb testing.TB, now time.Time, s testca.Spec, parent *testca.Cert) *testca.Cert {
	tb.Helper()
	s.At = now
	if parent == nil {
		return testca.SelfSigned(tb, s)
	}
	return parent.Issue(tb, s)
}

// certClient returns a generated client that presents chain (leaf first; none when
// empty) in the TLS handshake and trusts the env's server.
func (e *env) certClient(chain ...*testca.Cert) *oapi.ClientWithResponses {
	e.t.Helper()
	tr := e.http.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	if len(chain) > 0 {
		tc := chain[0].TLS(chain[1:]...)
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
	ca := mustCert(t, now, testca.Spec{CommonName: "device CA", CA: true}, nil)
	inter := mustCert(t, now, testca.Spec{CommonName: "line 3 intermediate", CA: true}, ca)
	otherCA := mustCert(t, now, testca.Spec{CommonName: "someone else's CA", CA: true}, nil)
	e := mustEnvWith(t, envOptions{mtls: true, clientCA: []*testca.Cert{ca}})
	if !e.clock.Now().Equal(now) {
		t.Fatalf("env clock: got %v, want %v", e.clock.Now(), now)
	}
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})

	pinned := mustCert(t, now, testca.Spec{CommonName: "pinned"}, nil)
	pinnedFP := domain.CertFingerprint(pinned.Cert.Raw)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "pinned", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &pinnedFP}})
	stale := mustCert(t, now, testca.Spec{CommonName: "pinned-stale", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}, nil)
	staleFP := domain.CertFingerprint(stale.Cert.Raw)
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
	issuedAfterRevoke := mustCert(t, now, testca.Spec{CommonName: "issued-revoked", NotBefore: now.Add(time.Second)}, ca)
	e.clock.Advance(time.Minute)

	withJWT := func(tok string) oapi.RequestEditorFn { return bearer(tok) }
	hsFor := func(id string) string { return mustSign(t, jwt.SigningMethodHS256, e.claims(id), aliceSecret) }
	tests := []struct {
		name       string
		chain      []*testca.Cert
		jwt        string
		wantStatus int
		wantDevice string
	}{
		{"pinned self-signed certificate", []*testca.Cert{pinned}, "", 200, "pinned"},
		{"CA-issued certificate", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued"}, ca)}, "", 200, "issued"},
		{"CA-issued through an intermediate", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued"}, inter), inter}, "", 200, "issued"},
		{"the common name selects the device", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued-2"}, ca)}, "", 200, "issued-2"},
		{"CA-issued after a revocation", []*testca.Cert{issuedAfterRevoke}, "", 200, "issued-revoked"},
		{"JWT device without a certificate", nil, hsFor("alice"), 200, "alice"},
		{"JWT device with a certificate too", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "alice"}, ca)}, hsFor("alice"), 200, "alice"},

		{"pinned device, other certificate with its name", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "pinned"}, nil)}, "", 401, ""},
		{"expired pinned certificate", []*testca.Cert{stale}, "", 401, ""},
		{"pinned device, CA-issued certificate with its name", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "pinned"}, ca)}, "", 401, ""},
		{"CA-issued for a JWT device", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "alice"}, ca)}, "", 401, ""},
		{"CA-issued for an unknown device", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "mallory"}, ca)}, "", 401, ""},
		{"CA-issued, common name not a device ID", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "has space"}, ca)}, "", 401, ""},
		{"issued by another CA", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued"}, otherCA)}, "", 401, ""},
		{"self-signed for a CA device", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued"}, nil)}, "", 401, ""},
		{"intermediate not presented", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued"}, inter)}, "", 401, ""},
		{"the CA certificate itself", []*testca.Cert{ca}, "", 401, ""},
		{"server-auth-only certificate", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca)}, "", 401, ""},
		{"expired CA-issued certificate", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}, ca)}, "", 401, ""},
		{"CA-issued certificate not valid yet", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued", NotBefore: now.Add(time.Hour)}, ca)}, "", 401, ""},
		{"disabled device", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued-off"}, ca)}, "", 401, ""},
		{"certificate issued before the revocation", []*testca.Cert{mustCert(t, now, testca.Spec{CommonName: "issued-revoked"}, ca)}, "", 401, ""},
		{"no certificate and no JWT", nil, "", 401, ""},
		{"certificate device presenting a JWT", nil, hsFor("pinned"), 401, ""},
		{"certificate device presenting a JWT with its certificate", []*testca.Cert{pinned}, hsFor("pinned"), 401, ""},
		{"CA device presenting a JWT", nil, hsFor("issued"), 401, ""},
	}
	var refusals sameRefusal
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
			refusals.check(t, resp.Body)
		})
	}
}

// TestCertificateIgnoredWithoutMutualTLS: over TLS without -client-auth optional a
// certificate proves nothing (the server does not even ask for one).
func TestCertificateIgnoredWithoutMutualTLS(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	e := mustEnvWith(t, envOptions{tls: true})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	pinned := mustCert(t, now, testca.Spec{CommonName: "pinned"}, nil)
	fp := domain.CertFingerprint(pinned.Cert.Raw)
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
		c := mustCert(t, now, testca.Spec{CommonName: id}, nil)
		fp := domain.CertFingerprint(c.Cert.Raw)
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
