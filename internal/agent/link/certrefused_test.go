package link_test

import (
	"errors"
	"testing"

	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

func TestCertificateRefused(t *testing.T) {
	cert := token.Token{Certificate: &token.Certificate{Serial: "1"}}
	tests := []struct {
		name string
		err  error
		tok  token.Token
		want bool
	}{
		{"CA not trusted", errors.New("network Error : remote error: tls: unknown certificate authority"), cert, true},
		{"revoked", errors.New("connect: remote error: tls: revoked certificate"), cert, true},
		{"bad certificate", errors.New("remote error: tls: bad certificate"), cert, true},
		{"a token, not a certificate", errors.New("remote error: tls: bad certificate"), token.Token{}, false},
		{"the server's certificate", errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), cert, false},
		{"not about the certificate", errors.New("remote error: tls: bad certificate status response"), cert, false},
		{"unreachable", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), cert, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := link.CertificateRefused(tc.err, tc.tok)
			if got := errors.Is(err, link.ErrRefused); got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("got %v (refused %v), want refused %v wrapping the error", err, got, tc.want)
			}
		})
	}
	if link.CertificateRefused(nil, cert) != nil {
		t.Error("nil error not returned as nil")
	}
}
