package main

import (
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// httpsClient trusts server and presents cert, if any.
func httpsClient(t *testing.T, url, bearer string, server *testca.Cert, cert *testca.Cert) *oapi.ClientWithResponses {
	t.Helper()
	cfg := &tls.Config{RootCAs: testca.Pool(server)}
	if cert != nil {
		tc := cert.TLS()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return apptest.NewClient(t, url, bearer, &http.Client{Transport: tr})
}

// TestRunMutualTLS starts the service with TOKENSVC_CLIENT_AUTH=optional and a client CA
// and gets tokens by pinned and CA-issued certificates, while a request without either
// certificate or assertion still gets 401.
func TestRunMutualTLS(t *testing.T) {
	dir := t.TempDir()
	server := testca.SelfSigned(t, testca.Spec{CommonName: "tokensvc", Hosts: []string{"127.0.0.1"}})
	ca := testca.NewCA(t, "device CA")
	server.WriteCert(t, filepath.Join(dir, "tls.crt"))
	server.WriteKey(t, filepath.Join(dir, "tls.key"))
	ca.WriteCert(t, filepath.Join(dir, "ca.crt"))

	const admin = "mtls-admin-token-0123456789"
	in := mustStart(t, map[string]string{
		"TOKENSVC_DATA_DIR":    filepath.Join(dir, "data"),
		"TOKENSVC_ADMIN_TOKEN": admin,
		"TOKENSVC_TLS_CERT":    filepath.Join(dir, "tls.crt"),
		"TOKENSVC_TLS_KEY":     filepath.Join(dir, "tls.key"),
		"TOKENSVC_CLIENT_AUTH": "optional",
		"TOKENSVC_CLIENT_CA":   filepath.Join(dir, "ca.crt"),
	})
	ctx := t.Context()
	op := httpsClient(t, in.url, admin, server, nil)
	apptest.PostHub(t, op, mainHub)
	pinned := testca.SelfSigned(t, testca.Spec{CommonName: "pinned-1"})
	fp := domain.CertFingerprint(pinned.Cert.Raw)
	issued := ca.Issue(t, testca.Spec{CommonName: "issued-1"})
	for _, d := range []oapi.DeviceCreate{
		{DeviceId: "pinned-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &fp}},
		{DeviceId: "issued-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509Ca}},
	} {
		apptest.PostDevice(t, op, d)
	}
	tests := []struct {
		name       string
		cert       *testca.Cert
		wantStatus int
	}{
		{"pinned certificate", pinned, 200},
		{"CA-issued certificate", issued, 200},
		{"no certificate, no assertion", nil, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := httpsClient(t, in.url, "", server, tt.cert).GetTokenWithResponse(ctx, &oapi.GetTokenParams{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
		})
	}
}

func TestRunBadClientCA(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "ca.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		caFile  string
		wantErr string
	}{
		{"missing file", filepath.Join(dir, "absent.crt"), "client ca"},
		{"no certificate", notPEM, "no PEM certificate"},
		{"a key, not a certificate", keyFile, "not a CERTIFICATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"TOKENSVC_ADDR":        "127.0.0.1:0",
				"TOKENSVC_DATA_DIR":    filepath.Join(dir, "data"),
				"TOKENSVC_TLS_CERT":    "unused.crt",
				"TOKENSVC_TLS_KEY":     "unused.key",
				"TOKENSVC_CLIENT_AUTH": "optional",
				"TOKENSVC_CLIENT_CA":   tt.caFile,
			}
			err := run(t.Context(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
