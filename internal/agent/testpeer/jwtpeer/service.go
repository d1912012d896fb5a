package jwtpeer

import (
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// ServiceIssuer is the issuer URL (iss) of the service StartService runs.
const ServiceIssuer = "https://issuer.tokensvc.test"

// Service is tokensvc built by app.New (through apptest) over the embedded store with
// its issuer key ring on, serving TLS on loopback: the real source of JWT credentials
// and of the JWKS a broker fetches.
type Service struct {
	*apptest.Service
	// CA issued the service's certificate; it can issue the brokers' too. Pool holds it.
	CA   *testca.Cert
	Pool *x509.CertPool

	tb  testing.TB
	now func() time.Time
}

// StartService starts the service on clock now (nil: time.Now); it stops when the
// test ends.
func StartService(tb testing.TB, now func() time.Time) *Service {
	tb.Helper()
	if now == nil {
		now = time.Now
	}
	ca := testca.NewCA(tb, "jwtpeer service CA")
	leaf := ca.Issue(tb, testca.Spec{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}})
	st := apptest.FileStore(tb)
	svc := apptest.Start(tb, apptest.Options{
		Store: st, Clock: now, CertPEM: string(leaf.CertPEM()), KeyPEM: string(leaf.KeyPEM()), RootCAs: testca.Pool(ca),
		Config: func(c *app.Config) {
			c.Issuer.Issuer = ServiceIssuer
			c.Limits.DeviceRate = 0 // tests refetch at will
		},
	})
	return &Service{Service: svc, CA: ca, Pool: testca.Pool(ca), tb: tb, now: now}
}

// JWKSURL is where the service publishes its issuer keys.
func (s *Service) JWKSURL() string { return s.URL + "/.well-known/jwks.json" }

// Device registers an HS256 device on hub through the operator API and returns a
// fetcher of its tokens (assertions on the service's clock).
func (s *Service) Device(id, hub string) *fetch.Client {
	s.tb.Helper()
	return s.Fetcher(id, s.DeviceSecret(id, hub))
}

// DeviceSecret registers an HS256 device on hub through the operator API and returns
// its secret as the API shows it once.
func (s *Service) DeviceSecret(id, hub string) string {
	s.tb.Helper()
	created := s.CreateDevice(oapi.DeviceCreate{DeviceId: id, Hub: hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	if created.Auth.Secret == nil {
		s.tb.Fatalf("create device %s: no secret in the answer", id)
	}
	return *created.Auth.Secret
}

// Fetcher returns a fetcher of device id's tokens, authenticating with its HS256
// secret.
func (s *Service) Fetcher(id, secret string) *fetch.Client {
	s.tb.Helper()
	cred, err := credential.Parse([]byte(secret), credential.HS256)
	if err != nil {
		s.tb.Fatal(err)
	}
	fc, err := fetch.New(fetch.Options{ServiceURL: s.URL, HTTPClient: &http.Client{Transport: s.HTTPClient.Transport, Timeout: 10 * time.Second},
		DeviceID: id, Audience: "tokensvc", Signer: cred, Now: s.now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		s.tb.Fatal(err)
	}
	return fc
}
