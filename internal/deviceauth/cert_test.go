package deviceauth_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// mustSelfSigned returns a self-signed client certificate for cn, valid around epoch.
func mustSelfSigned(tb testing.TB, cn string) *x509.Certificate {
	tb.Helper()
	return testca.SelfSigned(tb, testca.Spec{CommonName: cn, At: epoch}).Cert
}

// TestVerifyCertEdges covers what the HTTP matrix (internal/httpapi/mtls_test.go)
// cannot reach: chain shapes the TLS layer would hand over, and an x509-ca device on a
// service without a client CA. The matrix holds the certificate-to-device rules.
func TestVerifyCertEdges(t *testing.T) {
	st := mustStore(t)
	pinned := mustSelfSigned(t, "pinned")
	ctx := context.Background()
	for _, d := range []domain.Device{
		{ID: "pinned", Hub: "h", Auth: domain.Credential{Type: domain.CredX509, CertFingerprint: domain.CertFingerprint(pinned.Raw)}},
		{ID: "issued", Hub: "h", Auth: domain.Credential{Type: domain.CredX509CA}},
	} {
		if err := st.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	v := deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch })
	long := make([]*x509.Certificate, 9)
	for i := range long {
		long[i] = pinned
	}
	tests := []struct {
		name    string
		certs   []*x509.Certificate
		wantErr bool
	}{
		{"pinned", []*x509.Certificate{pinned}, false},
		{"no certificates", nil, true},
		{"chain too long", long, true},
		{"x509-ca device without a client CA", []*x509.Certificate{mustSelfSigned(t, "issued")}, true},
		{"JWT device", []*x509.Certificate{mustSelfSigned(t, "d1")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := v.VerifyCert(t.Context(), tt.certs)
			if tt.wantErr {
				if !errors.Is(err, deviceauth.ErrUnauthenticated) {
					t.Fatalf("got device %q, error %v, want ErrUnauthenticated", d.ID, err)
				}
				return
			}
			if err != nil || d.ID != "pinned" {
				t.Fatalf("got device %q, error %v, want pinned", d.ID, err)
			}
		})
	}
}

func TestVerifyCertStoreUnavailableIsNotAnAuthFailure(t *testing.T) {
	v := deviceauth.NewVerifier(unavailable{}, "tokensvc", func() time.Time { return epoch })
	_, err := v.VerifyCert(t.Context(), []*x509.Certificate{mustSelfSigned(t, "d1")})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, deviceauth.ErrUnauthenticated) {
		t.Fatalf("got %v, want store.ErrUnavailable and not ErrUnauthenticated", err)
	}
}
