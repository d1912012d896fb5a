package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/testclock"
)

const (
	adminToken = "test-admin-token-0123456789"
	audience   = "tokensvc-test"
)

// fakeClock is the settable clock shared by every component of a test server.
type fakeClock = testclock.Clock

// env is the service as app.New builds it (through apptest), over a real embedded
// store, on the env's fake clock.
type env struct {
	t       testing.TB
	svc     *apptest.Service
	url     string
	http    *http.Client
	handler http.Handler
	clock   *fakeClock
	store   store.Store
	admin   *oapi.ClientWithResponses
	anon    *oapi.ClientWithResponses
	logBuf  *syncbuf.Buffer
	audit   *syncbuf.Buffer
	jti     atomic.Int64
}

func mustEnv(t testing.TB) *env {
	t.Helper()
	return mustEnvWith(t, envOptions{})
}

// envOptions vary the test server: TLS, mutual TLS and the configuration.
type envOptions struct {
	// tls serves HTTPS; mtls also asks clients for certificates and authenticates
	// devices by them (-client-auth optional), trusting clientCA for x509-ca devices.
	tls, mtls bool
	clientCA  []*testca.Cert
	// config changes the service configuration (limits, OIDC, …).
	config func(c *app.Config)
	// stdout receives the audit records instead of env.audit.
	stdout io.Writer
	// store replaces the embedded store the service opens (apptest.Options.Store).
	store store.Store
	// logLevel is the service log's level (apptest.Options.LogLevel; nil: debug).
	logLevel slog.Leveler
}

func mustEnvWith(t testing.TB, o envOptions) *env {
	t.Helper()
	clock := testclock.New(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	opts := apptest.Options{
		Clock:    clock.Now,
		Stdout:   o.stdout,
		Store:    o.store,
		LogLevel: o.logLevel,
		Config: func(c *app.Config) {
			c.Audience = audience
			c.AdminToken = adminToken
			if o.mtls {
				c.ClientAuth = "optional"
			}
			if o.config != nil {
				o.config(c)
			}
		},
	}
	if o.tls || o.mtls {
		ca := testpeer.NewCA(t, "httpapi test CA")
		leaf := ca.Issue(t, "127.0.0.1")
		opts.CertPEM, opts.KeyPEM, opts.RootCAs = leaf.CertPEM, leaf.KeyPEM, ca.Pool()
	}
	for _, c := range o.clientCA {
		opts.ClientCAPEM += string(c.CertPEM())
	}
	svc := apptest.Start(t, opts)
	e := &env{t: t, svc: svc, url: svc.URL, http: svc.HTTPClient, handler: svc.App.Handler(), clock: clock,
		store: svc.App.Store(), logBuf: svc.Logs, audit: svc.Stdout}
	e.admin = mustClientOf(t, e.url, adminToken, e.http)
	e.anon = mustClientOf(t, e.url, "", e.http)
	return e
}

func mustClient(t testing.TB, url, bearer string) *oapi.ClientWithResponses {
	t.Helper()
	return mustClientOf(t, url, bearer, http.DefaultClient)
}

func mustClientOf(t testing.TB, url, bearer string, hc *http.Client) *oapi.ClientWithResponses {
	t.Helper()
	return apptest.NewClient(t, url, bearer, hc)
}

// bearer returns a request editor that sets a device assertion.
func bearer(tok string) oapi.RequestEditorFn {
	return func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+tok)
		return nil
	}
}

func (e *env) mustHub(h oapi.HubCreate) oapi.Hub {
	e.t.Helper()
	return apptest.PostHub(e.t, e.admin, h)
}

func (e *env) mustDevice(d oapi.DeviceCreate) oapi.DeviceCreated {
	e.t.Helper()
	return apptest.PostDevice(e.t, e.admin, d)
}

// claims are the standard claims of a valid assertion for device id at the env's clock.
func (e *env) claims(id string) jwt.MapClaims {
	now := e.clock.Now()
	return jwt.MapClaims{
		"iss": id,
		"sub": id,
		"aud": audience,
		"iat": now.Unix(),
		"exp": now.Add(2 * time.Minute).Unix(),
		"jti": "jti-" + strconv.FormatInt(e.jti.Add(1), 10),
	}
}

func mustSign(t testing.TB, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) hs256(id, secret string) string {
	return mustSign(e.t, jwt.SigningMethodHS256, e.claims(id), []byte(secret))
}

func (e *env) getToken(assertion string, params *oapi.GetTokenParams, editors ...oapi.RequestEditorFn) *oapi.GetTokenResponse {
	e.t.Helper()
	if params == nil {
		params = &oapi.GetTokenParams{}
	}
	resp, err := e.anon.GetTokenWithResponse(e.t.Context(), params, append([]oapi.RequestEditorFn{bearer(assertion)}, editors...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func mustECKey(t testing.TB) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k := testca.P256Key(t)
	return k, testca.PublicKeyPEM(t, k.Public())
}

func mustEdKey(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, testca.PublicKeyPEM(t, pub)
}

func ptr[T any](v T) *T { return &v }

// rawRequest sends a request the generated client cannot express (malformed on purpose).
func (e *env) rawRequest(method, path, auth, contentType string, body io.Reader) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// sameRefusal holds a table's 401s to one wording: every failure of proof reads the
// same, so callers learn nothing about which devices exist or why they failed.
type sameRefusal struct{ detail string }

func (s *sameRefusal) check(t *testing.T, body []byte) {
	t.Helper()
	var p oapi.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	got := deref(p.Detail)
	if s.detail == "" {
		s.detail = got
		return
	}
	if got != s.detail {
		t.Errorf("detail: got %q, want the same as every other 401 (%q)", got, s.detail)
	}
}
