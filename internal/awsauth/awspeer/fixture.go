package awspeer

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// Names the fixture uses.
const (
	// Endpoint is the AWS IoT data endpoint the hub names; the stand-in's certificate
	// is for it, and clients dial the stand-in's loopback address instead.
	Endpoint = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com"
	// IssuerURL is the service's issuer URL (iss).
	IssuerURL = "https://tokensvc.test"
	// Audience is the device assertions' audience.
	Audience  = "tokensvc"
	Region    = "eu-west-1"
	AccountID = "123456789012"
	// AuthorizerName and TokenKeyName are the authorizer resource's.
	AuthorizerName = "tokensvc-authorizer"
	TokenKeyName   = "tokensvc-token"
)

// Hub returns the normalised awsiot hub "aws" on endpoint that the authorizer's and
// the stand-in's own tests use: authorizer "tokensvc", token key "token",
// subscriptions to commands/{deviceId}/#, signing on or off.
func Hub(tb testing.TB, endpoint string, signing bool) domain.Hub {
	tb.Helper()
	h := domain.Hub{Name: "aws", Kind: awsiot.KindName, Hostname: endpoint, Settings: map[string]string{
		"authorizerName": `"tokensvc"`, "tokenKeyName": `"token"`, "signing": strconv.FormatBool(signing),
		"subscribeTemplates": `["commands/{deviceId}/#"]`,
	}}
	if err := (awsiot.Kind{}).Normalize(&h); err != nil {
		tb.Fatal(err)
	}
	return h
}

// FixtureOptions vary a Fixture.
type FixtureOptions struct {
	DeviceID string
	// Unsigned makes the hub and the authorizer run without token signing.
	Unsigned bool
	// TTL is the hub's token lifetime; zero provisions the hub through the operator
	// API with its defaults, else through the registry (the API's minimum is 60 s).
	TTL time.Duration
	// SubscribeTemplates are the hub's and the authorizer's.
	SubscribeTemplates []string
}

// Fixture is tokensvc (app.New through apptest, HTTPS, an issuer URL) with an awsiot
// hub and one HS256 device, the authorizer reading tokensvc's JWKS over HTTPS, and the
// AWS stand-in holding tokensvc's RSA key (from GET /issuer/keys/{kid}/public-key.pem)
// as the authorizer's token-signing key.
type Fixture struct {
	CA *testca.Cert
	// CAFile holds the CA (PEM) that verifies the service and the stand-in.
	CAFile  string
	Service *apptest.Service
	Hub     string
	// DeviceID is the device; Secret its HS256 secret, also in SecretFile (0600).
	DeviceID, Secret, SecretFile string
	Authorizer                   *awsauth.Authorizer
	Broker                       *Broker
	Dir                          string
}

// NewFixture starts it all; everything stops when the test ends.
func NewFixture(tb testing.TB, o FixtureOptions) *Fixture {
	tb.Helper()
	if o.DeviceID == "" {
		o.DeviceID = "sensor-0001"
	}
	ca := testca.NewCA(tb, "awspeer test CA")
	dir := tb.TempDir()
	f := &Fixture{CA: ca, Hub: "aws", DeviceID: o.DeviceID, Dir: dir}
	f.CAFile = ca.WriteCert(tb, filepath.Join(dir, "ca.pem"))
	leaf := ca.Issue(tb, testca.Spec{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}})
	f.Service = apptest.Start(tb, apptest.Options{
		CertPEM: string(leaf.CertPEM()), KeyPEM: string(leaf.KeyPEM()), RootCAs: testca.Pool(ca),
		Config: func(c *app.Config) {
			c.Audience = Audience
			c.Issuer.Issuer = IssuerURL
			c.Limits.DeviceRate = 0 // agents refetch at will in these tests
		},
	})
	signing := !o.Unsigned
	hub := oapi.HubCreate{Name: f.Hub, Kind: oapi.Awsiot, Hostname: Endpoint,
		AuthorizerName: ptr(AuthorizerName), TokenKeyName: ptr(TokenKeyName), Signing: &signing}
	if len(o.SubscribeTemplates) > 0 {
		hub.SubscribeTemplates = &o.SubscribeTemplates
	}
	if o.TTL == 0 {
		apptest.PostHub(tb, f.Service.Admin, hub)
	} else {
		settings := map[string]string{"authorizerName": `"` + AuthorizerName + `"`, "tokenKeyName": `"` + TokenKeyName + `"`,
			"signing": map[bool]string{true: "true", false: "false"}[signing]}
		if len(o.SubscribeTemplates) > 0 {
			settings["subscribeTemplates"] = jsonText(tb, o.SubscribeTemplates)
		}
		f.Service.CreateHub(domain.Hub{Name: f.Hub, Kind: awsiot.KindName, Hostname: Endpoint,
			Settings: settings, DefaultTTL: o.TTL, MaxTTL: o.TTL})
	}
	dev := f.Service.CreateDevice(oapi.DeviceCreate{DeviceId: f.DeviceID, Hub: f.Hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	f.Secret = *dev.Auth.Secret
	f.SecretFile = filepath.Join(dir, "device.secret")
	if err := os.WriteFile(f.SecretFile, []byte(f.Secret+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}

	// The operator's set-up, as the README says: tokensvc's active RSA issuer key (the
	// ring creates it at start; a rotation creates it at once when it has none yet),
	// its PEM handed to aws iot create-authorizer, the JWKS URL to the authorizer.
	kid := f.activeRSAKey(tb)
	cfg := awsauth.Config{Issuer: IssuerURL, Endpoint: Endpoint, JWKSURL: f.Service.URL + "/.well-known/jwks.json",
		TokenKeyName: TokenKeyName, Region: Region, AccountID: AccountID, TopicTemplate: awsiot.DefaultTopicTemplate,
		SubscribeTemplates: o.SubscribeTemplates, Leeway: time.Second, MinSeconds: 1}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: testca.Pool(ca)}}}
	keys, err := awsauth.NewKeySource(tb.Context(), cfg, hc)
	if err != nil {
		tb.Fatal(err)
	}
	if f.Authorizer, err = awsauth.New(cfg, keys, nil, discard()); err != nil {
		tb.Fatal(err)
	}
	bo := Options{Cert: ca.Issue(tb, testca.Spec{CommonName: Endpoint, Hosts: []string{Endpoint}}).TLS(),
		Authorizer: f.Authorizer.Handle, AuthorizerName: AuthorizerName, TokenKeyName: TokenKeyName,
		Region: Region, AccountID: AccountID, MinSeconds: 1}
	if signing {
		bo.SigningKeys = []*rsa.PublicKey{f.PublicKey(tb, kid)}
	}
	f.Broker = Start(tb, bo)
	return f
}

// activeRSAKey returns the kid of the RS256 issuer key that signs now.
func (f *Fixture) activeRSAKey(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	active := func() string {
		resp, err := f.Service.Admin.ListIssuerKeysWithResponse(ctx)
		if err != nil || resp.JSON200 == nil {
			tb.Fatalf("list issuer keys: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		for _, k := range resp.JSON200.Items {
			if k.Alg == "RS256" && k.State == "active" {
				return string(k.Kid)
			}
		}
		return ""
	}
	if kid := active(); kid != "" {
		return kid
	}
	// None yet: a rotation creates the first, signing at once (or the ring's own start
	// got there first, and the rotation's key waits for its lead).
	if rot, err := f.Service.Admin.RotateIssuerKeyWithResponse(ctx, oapi.IssuerKeyRotate{Alg: "RS256"}); err != nil || rot.JSON201 == nil {
		tb.Fatalf("rotate issuer key: %v %d %s", err, rot.StatusCode(), rot.Body)
	}
	kid := active()
	if kid == "" {
		tb.Fatal("no active RS256 issuer key after a rotation")
	}
	return kid
}

// PublicKey returns issuer key kid as GET /issuer/keys/{kid}/public-key.pem serves it.
func (f *Fixture) PublicKey(tb testing.TB, kid string) *rsa.PublicKey {
	tb.Helper()
	resp, err := f.Service.Admin.GetIssuerPublicKeyWithResponse(context.Background(), kid)
	if err != nil || resp.StatusCode() != http.StatusOK {
		tb.Fatalf("public key %s: %v %d", kid, err, resp.StatusCode())
	}
	b, _ := pem.Decode(resp.Body)
	if b == nil || b.Type != "PUBLIC KEY" {
		tb.Fatalf("public key %s: not a PEM PUBLIC KEY: %s", kid, resp.Body)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		tb.Fatalf("public key %s is %T, want RSA", kid, k)
	}
	return rk
}

// Fetcher returns the agent's token client for the device, over transport ("" or
// "ws").
func (f *Fixture) Fetcher(tb testing.TB, transport string) *fetch.Client {
	tb.Helper()
	cred, err := credential.Load(f.SecretFile, credential.HS256)
	if err != nil {
		tb.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: testca.Pool(f.CA)}}}
	fc, err := fetch.New(fetch.Options{ServiceURL: f.Service.URL, HTTPClient: hc, DeviceID: f.DeviceID,
		Audience: Audience, Transport: transport, Signer: cred, Logger: discard()})
	if err != nil {
		tb.Fatal(err)
	}
	return fc
}

// Token fetches one token for the device over transport, as the agent does.
func (f *Fixture) Token(tb testing.TB, transport string) token.Token {
	tb.Helper()
	t, err := f.Fetcher(tb, transport).Fetch(context.Background())
	if err != nil {
		tb.Fatalf("GET /token: %v", err)
	}
	return t
}

func ptr[T any](v T) *T { return &v }

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func jsonText(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Keeper runs the agent's token keeper for the device over transport, with quick
// retries, until the test ends.
func (f *Fixture) Keeper(tb testing.TB, transport string) *keeper.Keeper {
	tb.Helper()
	fc := f.Fetcher(tb, transport)
	k := keeper.New(keeper.Options{Fetcher: fc, Holder: &token.Holder{}, Key: fc.Key(),
		Backoff: backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second}, Logger: discard()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return k
}
