package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// pki is a certificate and its key.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// mustIssue makes a certificate from tmpl, signed by parent or self-signed when nil.
func mustIssue(tb testing.TB, tmpl *x509.Certificate, parent *pki) *pki {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	tmpl.SerialNumber = big.NewInt(now.UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
	tmpl.BasicConstraintsValid = true
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &pki{cert: c, key: key}
}

func mustWritePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func (p *pki) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.cert.Raw}, PrivateKey: p.key, Leaf: p.cert}
}

// httpsClient trusts server and presents cert, if any.
func httpsClient(t *testing.T, url, bearer string, server *pki, cert *pki) *oapi.ClientWithResponses {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(server.cert)
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		tc := cert.tlsCert()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := oapi.NewClientWithResponses(url, oapi.WithHTTPClient(&http.Client{Transport: tr}), oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRunMutualTLS starts the service with TOKENSVC_CLIENT_AUTH=optional and a client CA
// and gets tokens by pinned and CA-issued certificates, while a request without either
// certificate or assertion still gets 401.
func TestRunMutualTLS(t *testing.T) {
	dir := t.TempDir()
	server := mustIssue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "tokensvc"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, nil)
	keyDER, err := x509.MarshalPKCS8PrivateKey(server.key)
	if err != nil {
		t.Fatal(err)
	}
	ca := mustIssue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device CA"}, IsCA: true, KeyUsage: x509.KeyUsageCertSign}, nil)
	mustWritePEM(t, filepath.Join(dir, "tls.crt"), "CERTIFICATE", server.cert.Raw)
	mustWritePEM(t, filepath.Join(dir, "tls.key"), "PRIVATE KEY", keyDER)
	mustWritePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.cert.Raw)

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
	if resp, err := op.CreateHubWithResponse(ctx, oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: "contoso-hub.azure-devices.net"}); err != nil || resp.StatusCode() != 201 {
		t.Fatalf("create hub: got %v %v, want 201", resp, err)
	}
	pinned := mustIssue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "pinned-1"}, KeyUsage: x509.KeyUsageDigitalSignature}, nil)
	fp := domain.CertFingerprint(pinned.cert.Raw)
	issued := mustIssue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "issued-1"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca)
	for _, d := range []oapi.DeviceCreate{
		{DeviceId: "pinned-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509, CertFingerprint: &fp}},
		{DeviceId: "issued-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509Ca}},
	} {
		if resp, err := op.CreateDeviceWithResponse(ctx, d); err != nil || resp.StatusCode() != 201 {
			t.Fatalf("create device %s: got %v %v, want 201", d.DeviceId, resp, err)
		}
	}
	tests := []struct {
		name       string
		cert       *pki
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
	mustWritePEM(t, keyFile, "PRIVATE KEY", []byte{1, 2, 3})
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
