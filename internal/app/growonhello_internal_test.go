package app

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"

	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestGrowOnHello: the wrapped configuration still completes handshakes, with and
// without a GetConfigForClient of its own, and that one's answer (a refusal included)
// is the handshake's.
func TestGrowOnHello(t *testing.T) {
	ca := testca.NewCA(t, "test CA")
	leaf := ca.Issue(t, testca.Spec{CommonName: "localhost", Hosts: []string{"localhost"}})
	base := &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}, MinVersion: tls.VersionTLS12}
	refused := errors.New("refused")
	for _, tc := range []struct {
		name    string
		hook    func(*tls.ClientHelloInfo) (*tls.Config, error)
		wantErr bool
	}{
		{"no hook of its own", nil, false},
		{"hook's configuration", func(*tls.ClientHelloInfo) (*tls.Config, error) { return base.Clone(), nil }, false},
		{"hook refuses", func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, refused }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base.Clone()
			c.GetConfigForClient = tc.hook
			srvCfg := growOnHello(c)
			cli, srv := net.Pipe()
			defer cli.Close()
			errc := make(chan error, 1)
			go func() {
				defer srv.Close()
				errc <- tls.Server(srv, srvCfg).Handshake()
			}()
			cliErr := tls.Client(cli, &tls.Config{RootCAs: testca.Pool(ca), ServerName: "localhost"}).Handshake()
			srvErr := <-errc
			if tc.wantErr {
				if !errors.Is(srvErr, refused) || cliErr == nil {
					t.Fatalf("server %v, client %v; want the hook's refusal", srvErr, cliErr)
				}
				return
			}
			if srvErr != nil || cliErr != nil {
				t.Fatalf("server %v, client %v", srvErr, cliErr)
			}
		})
	}
}
