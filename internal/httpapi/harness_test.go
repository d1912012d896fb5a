package httpapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

const (
	adminToken = "test-admin-token-0123456789"
	audience   = "tokensvc-test"
)

// fakeClock is a settable clock shared by every component of a test server.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a running API over a real embedded store.
type env struct {
	t      testing.TB
	srv    *httptest.Server
	clock  *fakeClock
	store  store.Store
	admin  *oapi.ClientWithResponses
	anon   *oapi.ClientWithResponses
	logBuf *syncbuf.Buffer
	jti    atomic.Int64
}

func mustEnv(t testing.TB) *env {
	t.Helper()
	return mustEnvWith(t, envOptions{})
}

// envOptions vary the test server: TLS, mutual TLS and limits.
type envOptions struct {
	// tls serves HTTPS; requestCerts also requests client certificates; mtls does both
	// and authenticates devices by them (Deps.Certs), trusting clientCA for x509-ca
	// devices.
	tls, requestCerts, mtls bool
	clientCA                *x509.CertPool
	limits                  func(now func() time.Time) httpapi.Limiter
}

func mustEnvWith(t testing.TB, o envOptions) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := filestore.Open(filepath.Join(dir, "tokensvc.db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	admin, _, err := adminauth.Bootstrap(t.Context(), st, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	var verifierOpts []deviceauth.Option
	if o.clientCA != nil {
		verifierOpts = append(verifierOpts, deviceauth.WithClientCA(o.clientCA))
	}
	verifier := deviceauth.NewVerifier(st, audience, clock.Now, verifierOpts...)
	deps := httpapi.Deps{
		Registry: registry.New(st, kinds.All(), clock.Now),
		Issuer:   tokens.NewIssuer(st, kinds.All(), signer.New(clock.Now), nil),
		Devices:  verifier,
		Admin:    admin,
		Ready:    func(ctx context.Context) (string, error) { return "", st.Ping(ctx) },
		Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.mtls {
		deps.Certs = verifier
	}
	if o.limits != nil {
		deps.Limits = o.limits(clock.Now)
	}
	h, err := httpapi.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	if o.tls || o.requestCerts || o.mtls {
		srv.TLS = &tls.Config{}
		if o.requestCerts || o.mtls {
			// As cmd/tokensvc does: request a certificate, verify it in the application.
			srv.TLS.ClientAuth = tls.RequestClientCert
		}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, clock: clock, store: st, logBuf: logs}
	e.admin = mustClientOf(t, srv.URL, adminToken, srv.Client())
	e.anon = mustClientOf(t, srv.URL, "", srv.Client())
	return e
}

func mustClient(t testing.TB, url, bearer string) *oapi.ClientWithResponses {
	t.Helper()
	return mustClientOf(t, url, bearer, http.DefaultClient)
}

func mustClientOf(t testing.TB, url, bearer string, hc *http.Client) *oapi.ClientWithResponses {
	t.Helper()
	c, err := oapi.NewClientWithResponses(url, oapi.WithHTTPClient(hc), oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
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

// bearer returns a request editor that sets a device assertion.
func bearer(tok string) oapi.RequestEditorFn {
	return func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+tok)
		return nil
	}
}

func (e *env) mustHub(h oapi.HubCreate) oapi.Hub {
	e.t.Helper()
	resp, err := e.admin.CreateHubWithResponse(e.t.Context(), h)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.JSON201 == nil {
		e.t.Fatalf("create hub %s: got %d %s, want 201", h.Name, resp.StatusCode(), resp.Body)
	}
	return *resp.JSON201
}

func (e *env) mustDevice(d oapi.DeviceCreate) oapi.DeviceCreated {
	e.t.Helper()
	resp, err := e.admin.CreateDeviceWithResponse(e.t.Context(), d)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.JSON201 == nil {
		e.t.Fatalf("create device %s: got %d %s, want 201", d.DeviceId, resp.StatusCode(), resp.Body)
	}
	return *resp.JSON201
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

func mustECKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, mustPublicPEM(t, k.Public())
}

func mustEdKey(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, mustPublicPEM(t, pub)
}

func mustPublicPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func ptr[T any](v T) *T { return &v }

// rawRequest sends a request the generated client cannot express (malformed on purpose).
func (e *env) rawRequest(method, path, auth, contentType string, body io.Reader) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.srv.Client().Do(req)
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
