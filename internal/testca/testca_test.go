package testca_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/testca"
)

func TestVerify(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	root := testca.SelfSigned(t, testca.Spec{CommonName: "root", CA: true, At: at})
	inter := root.Issue(t, testca.Spec{CommonName: "inter", CA: true, At: at})
	other := testca.NewCA(t, "other")
	tests := []struct {
		name    string
		leaf    *testca.Cert
		inters  []*testca.Cert
		roots   []*testca.Cert
		usage   x509.ExtKeyUsage
		dns     string
		wantErr bool
	}{
		{"client issued by the root", root.Issue(t, testca.Spec{CommonName: "d1", At: at}), nil, []*testca.Cert{root}, x509.ExtKeyUsageClientAuth, "", false},
		{"client through an intermediate", inter.Issue(t, testca.Spec{CommonName: "d1", At: at}), []*testca.Cert{inter}, []*testca.Cert{root}, x509.ExtKeyUsageClientAuth, "", false},
		{"intermediate missing", inter.Issue(t, testca.Spec{CommonName: "d1", At: at}), nil, []*testca.Cert{root}, x509.ExtKeyUsageClientAuth, "", true},
		{"other root", root.Issue(t, testca.Spec{CommonName: "d1", At: at}), nil, []*testca.Cert{other}, x509.ExtKeyUsageClientAuth, "", true},
		{"client certificate used as a server's", root.Issue(t, testca.Spec{CommonName: "d1", At: at}), nil, []*testca.Cert{root}, x509.ExtKeyUsageServerAuth, "", true},
		{"server for a DNS name", root.Issue(t, testca.Spec{CommonName: "s", Hosts: []string{"svc.test", "127.0.0.1"}, At: at}), nil, []*testca.Cert{root}, x509.ExtKeyUsageServerAuth, "svc.test", false},
		{"server for another name", root.Issue(t, testca.Spec{CommonName: "s", Hosts: []string{"svc.test"}, At: at}), nil, []*testca.Cert{root}, x509.ExtKeyUsageServerAuth, "other.test", true},
		{"self-signed leaf as its own root", testca.SelfSigned(t, testca.Spec{CommonName: "pinned", At: at}), nil, nil, x509.ExtKeyUsageClientAuth, "", false},
		{"expired", root.Issue(t, testca.Spec{CommonName: "d1", NotBefore: at.Add(-2 * time.Hour), NotAfter: at.Add(-time.Hour)}), nil, []*testca.Cert{root}, x509.ExtKeyUsageClientAuth, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots := testca.Pool(tt.roots...)
			if tt.roots == nil {
				roots = testca.Pool(tt.leaf)
			}
			_, err := tt.leaf.Cert.Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: testca.Pool(tt.inters...), CurrentTime: at,
				KeyUsages: []x509.ExtKeyUsage{tt.usage}, DNSName: tt.dns,
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("verify: got %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestFilesAndTLS(t *testing.T) {
	ca := testca.NewCA(t, "ca")
	leaf := ca.Issue(t, testca.Spec{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}})
	dir := t.TempDir()
	pair, err := tls.LoadX509KeyPair(leaf.WriteCert(t, filepath.Join(dir, "tls.crt")), leaf.WriteKey(t, filepath.Join(dir, "tls.key")))
	if err != nil {
		t.Fatalf("the written files do not load as a key pair: %v", err)
	}
	if got := leaf.TLS(ca); len(got.Certificate) != 2 || string(got.Certificate[0]) != string(pair.Certificate[0]) {
		t.Errorf("TLS(ca): got %d certificates, want the leaf then the CA", len(got.Certificate))
	}
	if !leaf.Cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("IP SAN: got %v, want 127.0.0.1", leaf.Cert.IPAddresses)
	}
	if _, err := tls.X509KeyPair(leaf.CertPEM(), leaf.KeyPEM()); err != nil {
		t.Errorf("PEM forms: %v", err)
	}
}
