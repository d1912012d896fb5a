package testpeer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/filesink"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer/certpeer"
	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// CertEndpoint is the certificate hub's host name (an AWS IoT Core endpoint).
const CertEndpoint = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"

// CertificateHub registers h in mode certificate with certificates that live lifetime
// (the hub's default and maximum; at least the API's 300 s): through the registry, or
// through the operator API on a service that has none (the Vault store).
func (s *Service) CertificateHub(h domain.Hub, lifetime time.Duration) domain.Hub {
	s.tb.Helper()
	h.Mode = domain.SignCertificate
	secs := int(lifetime / time.Second)
	if s.apiHubs {
		mode := oapi.Certificate
		apptest.PostHub(s.tb, s.Admin, oapi.HubCreate{Name: h.Name, Kind: oapi.HubKind(h.Kind),
			Hostname: h.Hostname, Mode: &mode, CertificateTtlSeconds: &secs, CertificateMaxTtlSeconds: &secs})
		return h
	}
	if h.Settings == nil {
		h.Settings = map[string]string{}
	}
	h.Settings["certificateTtlSeconds"], h.Settings["certificateMaxTtlSeconds"] = strconv.Itoa(secs), strconv.Itoa(secs)
	return s.CreateHub(h)
}

// StartVaultService starts tokensvc on the Vault store of srv, with the PKI engine
// mounted at the default mount and role as the operator steps say and a token holding
// only the shipped policy (policyFile: deploy/vault/tokensvc.hcl relative to the
// test's package), serving HTTPS with a certificate from ca. Its hubs are created
// through the operator API.
func StartVaultService(tb testing.TB, ca *CA, srv *vaulttest.Server, policyFile string) *Service {
	tb.Helper()
	srv.MountPKI(tb, vaultstore.DefaultPKIMount, vaultstore.DefaultPKIRole)
	tok := srv.PolicyToken(tb, policyFile, "1h")
	leaf := ca.Issue(tb, "127.0.0.1")
	svc := apptest.Start(tb, apptest.Options{
		CertPEM: leaf.CertPEM, KeyPEM: leaf.KeyPEM, RootCAs: ca.Pool(),
		Config: func(c *app.Config) {
			c.Store = "vault"
			c.Vault.Address, c.Vault.Token = srv.Addr, tok
			c.Limits.DeviceRate = 0
		},
	})
	return &Service{Service: svc, tb: tb, apiHubs: true}
}

// CertFixture is a running service with an awsiot hub in mode certificate, one HS256
// device on it, and the certificate stand-in broker (AWS IoT Core's port 443: ALPN
// x-amzn-mqtt-ca, client certificates from the hub's CA).
type CertFixture struct {
	CA      *CA
	Service *Service
	Broker  *certpeer.Broker
	// HubName is the hub; HubCA its CA chain (GET /hubs/{name}/ca.pem).
	HubName string
	HubCA   string
	// DeviceID is the device; SecretFile holds its HS256 secret (0600).
	DeviceID   string
	SecretFile string
	// CAFile is the CA bundle that verifies the service and the broker.
	CAFile string
	Dir    string
}

// NewCertFixture starts the service with an awsiot certificate hub whose
// certificates live lifetime, provisions deviceID and starts the stand-in (AWS IoT
// Core's port 443: ALPN x-amzn-mqtt-ca) trusting the hub's CA.
func NewCertFixture(tb testing.TB, deviceID string, lifetime time.Duration) *CertFixture {
	tb.Helper()
	return NewCertFixtureKind(tb, awsiot.KindName, []string{awsiot.ALPNMQTTCert}, deviceID, lifetime)
}

// NewCertFixtureKind is NewCertFixture for a hub of kind (awsiot, iothub, jwtbroker)
// and a stand-in speaking alpn (none: no ALPN required).
func NewCertFixtureKind(tb testing.TB, kind domain.HubKind, alpn []string, deviceID string, lifetime time.Duration) *CertFixture {
	tb.Helper()
	ca := NewCA(tb, "agent test CA")
	return newCertFixture(tb, ca, StartService(tb, ca), kind, alpn, deviceID, lifetime)
}

// NewVaultCertFixture is NewCertFixture on a service whose store is the Vault srv: its
// device certificates are signed by Vault's PKI engine (see StartVaultService).
func NewVaultCertFixture(tb testing.TB, srv *vaulttest.Server, policyFile, deviceID string, lifetime time.Duration) *CertFixture {
	tb.Helper()
	ca := NewCA(tb, "agent test CA")
	return newCertFixture(tb, ca, StartVaultService(tb, ca, srv, policyFile), awsiot.KindName, []string{awsiot.ALPNMQTTCert}, deviceID, lifetime)
}

func newCertFixture(tb testing.TB, ca *CA, svc *Service, kind domain.HubKind, alpn []string, deviceID string, lifetime time.Duration) *CertFixture {
	tb.Helper()
	h := svc.CertificateHub(domain.Hub{Name: "certhub", Kind: kind, Hostname: CertEndpoint}, lifetime)
	created := svc.CreateDevice(oapi.DeviceCreate{DeviceId: deviceID, Hub: h.Name, Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	resp, err := svc.Admin.GetHubCAWithResponse(context.Background(), h.Name)
	if err != nil || resp.StatusCode() != 200 {
		tb.Fatalf("hub CA: %v %v", err, resp.StatusCode())
	}
	hubCA := x509.NewCertPool()
	if !hubCA.AppendCertsFromPEM(resp.Body) {
		tb.Fatal("hub CA: no certificate")
	}
	broker := certpeer.Start(tb, certpeer.Options{Cert: ca.Issue(tb, CertEndpoint).TLS, Roots: hubCA, ALPN: alpn})
	dir := tb.TempDir()
	f := &CertFixture{CA: ca, Service: svc, Broker: broker, HubName: h.Name, HubCA: string(resp.Body),
		DeviceID: deviceID, Dir: dir}
	f.SecretFile = filepath.Join(dir, "device.secret")
	if err := os.WriteFile(f.SecretFile, []byte(*created.Auth.Secret+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	f.CAFile = ca.WritePEM(tb, dir)
	return f
}

// Client returns the agent's fetch client for the device, authenticating with its
// HS256 secret and trusting the fixture's CA; adjust, when given, changes its options.
func (f *CertFixture) Client(tb testing.TB, adjust ...func(*fetch.Options)) *fetch.Client {
	tb.Helper()
	cred, err := credential.Load(f.SecretFile, credential.Auto)
	if err != nil {
		tb.Fatal(err)
	}
	tlsConf := &tls.Config{RootCAs: f.CA.Pool(), MinVersion: tls.VersionTLS12}
	o := fetch.Options{ServiceURL: f.Service.URL, HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}},
		DeviceID: f.DeviceID, Audience: Audience, Signer: cred}
	for _, a := range adjust {
		a(&o)
	}
	fc, err := fetch.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return fc
}

// Certificates returns the agent's certificate fetcher for the device (its Client),
// keeping the device's key in dir.
func (f *CertFixture) Certificates(tb testing.TB, dir string) *certificate.Fetcher {
	tb.Helper()
	cf, err := certificate.New(certificate.Options{Client: f.Client(tb), KeyFile: certificate.KeyFileIn(dir), DeviceID: f.DeviceID})
	if err != nil {
		tb.Fatal(err)
	}
	return cf
}

// CertDirSink returns the file sink tokenagent -cert-dir dir runs.
func CertDirSink(tb testing.TB, dir string) *filesink.Sink {
	tb.Helper()
	files, err := certificate.Files(dir)
	if err != nil {
		tb.Fatal(err)
	}
	sink, err := filesink.New(filesink.Config{Files: files}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return sink
}
