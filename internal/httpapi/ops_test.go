package httpapi_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// opsEnv is an env whose tests look at metrics, limits and audit records.
type opsEnv struct{ *env }

// mustOpsEnv builds the service; tweak may change its configuration.
func mustOpsEnv(t testing.TB, tweak func(c *app.Config)) *opsEnv {
	t.Helper()
	return &opsEnv{mustEnvWith(t, envOptions{config: tweak})}
}

func (e *opsEnv) scrape() string {
	e.t.Helper()
	resp, body := e.rawRequest(http.MethodGet, "/metrics", "", "", nil)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics: got %d, want 200", resp.StatusCode)
	}
	return string(body)
}

// sample returns the value of the series whose line starts with name{labels}, or -1.
func sample(exposition, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), series+" ")
		if ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// secretDevice provisions an HS256 device with an ID that must never be a label value.
const secretDevice = "sensor-7f3a9c-unique"

func (e *opsEnv) provision() (secret, primaryKey string) {
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: secretDevice, Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	return *c.Auth.Secret, *c.PrimaryKey
}

func TestMetricsSeriesMoveAndHoldNoSecrets(t *testing.T) {
	e := mustOpsEnv(t, nil)
	secret, key := e.provision()

	before := e.scrape()
	if got := sample(before, `tokensvc_tokens_issued_total{hub="main",kind="iothub",outcome="issued"}`); got != -1 {
		t.Fatalf("issued before any token: got %v, want no series", got)
	}
	var secrets []string
	for range 2 {
		a := e.hs256(secretDevice, secret)
		resp := e.getToken(a, nil)
		if resp.JSON200 == nil {
			t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
		}
		secrets = append(secrets, a, resp.JSON200.Token)
	}
	if resp := e.getToken("not-a-jwt", nil); resp.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("bad assertion: got %d, want 401", resp.StatusCode())
	}
	if resp, err := e.admin.GetDeviceWithResponse(t.Context(), secretDevice); err != nil || resp.StatusCode() != http.StatusOK {
		t.Fatalf("get device: %v %v", resp.StatusCode(), err)
	}
	after := e.scrape()

	for _, tc := range []struct {
		series string
		want   float64
	}{
		{`tokensvc_tokens_issued_total{hub="main",kind="iothub",outcome="issued"}`, 2},
		{`tokensvc_http_request_duration_seconds_count{code="2xx",method="GET",route="/token"}`, 2},
		{`tokensvc_http_request_duration_seconds_count{code="4xx",method="GET",route="/token"}`, 1},
		{`tokensvc_http_request_duration_seconds_count{code="2xx",method="GET",route="/devices/{deviceId}"}`, 1},
		{`tokensvc_http_request_duration_seconds_count{code="2xx",method="POST",route="/hubs"}`, 1},
	} {
		if got := sample(after, tc.series); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.series, got, tc.want)
		}
	}
	if got := sample(after, `tokensvc_store_operation_duration_seconds_count{op="get_device"}`); got < 2 {
		t.Errorf("store get_device count: got %v, want ≥ 2", got)
	}
	if got := sample(after, `tokensvc_store_errors_total{op="get_device"}`); got > 0 {
		t.Errorf("store get_device errors: got %v, want none", got)
	}

	secrets = append(secrets, secretDevice, secret, key, adminToken)
	for _, s := range secrets {
		if strings.Contains(after, s) {
			t.Errorf("/metrics contains a device ID or secret: %.24q…", s)
		}
	}
}

func TestDeviceRateLimit(t *testing.T) {
	e := mustOpsEnv(t, func(c *app.Config) {
		c.Limits = limits.Config{DeviceRate: 0.2, DeviceBurst: 2}
	})
	secret, _ := e.provision()
	other := e.mustDevice(oapi.DeviceCreate{DeviceId: "other", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})

	for i := range 2 {
		if resp := e.getToken(e.hs256(secretDevice, secret), nil); resp.StatusCode() != http.StatusOK {
			t.Fatalf("request %d: got %d %s, want 200", i, resp.StatusCode(), resp.Body)
		}
	}
	resp := e.getToken(e.hs256(secretDevice, secret), nil)
	if resp.StatusCode() != http.StatusTooManyRequests {
		t.Fatalf("burst exceeded: got %d %s, want 429", resp.StatusCode(), resp.Body)
	}
	h := resp.HTTPResponse.Header
	if got := h.Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type: got %q, want application/problem+json", got)
	}
	if got := h.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After: got %q, want 5 (one token at 0.2/s)", got)
	}
	// Another device's bucket is untouched.
	if resp := e.getToken(e.hs256("other", *other.Auth.Secret), nil); resp.StatusCode() != http.StatusOK {
		t.Fatalf("other device: got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	e.clock.Advance(5 * time.Second)
	if resp := e.getToken(e.hs256(secretDevice, secret), nil); resp.StatusCode() != http.StatusOK {
		t.Fatalf("after refill: got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	if got := sample(e.scrape(), `tokensvc_rate_limited_total{limit="device"}`); got != 1 {
		t.Errorf("rate_limited_total{limit=device}: got %v, want 1", got)
	}
}

func TestGlobalRateLimitBeforeAuthentication(t *testing.T) {
	e := mustOpsEnv(t, func(c *app.Config) {
		c.Limits = limits.Config{GlobalRate: 1, GlobalBurst: 1}
	})
	if resp := e.getToken("junk", nil); resp.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("first: got %d, want 401", resp.StatusCode())
	}
	resp := e.getToken("junk", nil)
	if resp.StatusCode() != http.StatusTooManyRequests || resp.HTTPResponse.Header.Get("Retry-After") != "1" {
		t.Fatalf("second: got %d Retry-After %q, want 429 with 1", resp.StatusCode(), resp.HTTPResponse.Header.Get("Retry-After"))
	}
	// Operator routes do not document 429 and are not globally limited.
	if resp, err := e.admin.ListHubsWithResponse(t.Context()); err != nil || resp.StatusCode() != http.StatusOK {
		t.Fatalf("list hubs: got %v %v, want 200", resp.StatusCode(), err)
	}
}

// TestInflightBound holds one request in flight (a bulk import whose body is still
// being sent) with room for one: others are shed with 503, probes are not.
func TestInflightBound(t *testing.T) {
	e := mustOpsEnv(t, func(c *app.Config) {
		c.Limits = limits.Config{MaxInflight: 1}
	})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	pr, pw := io.Pipe()
	req := e.streamingImport(pr)
	entered, release, done := make(chan struct{}), make(chan struct{}), make(chan int, 1)
	go func() {
		defer close(entered)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("held import: %v", err)
			done <- 0
			return
		}
		defer resp.Body.Close()
		// Its first report line proves the import is in the handler, reading the body.
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		if !strings.Contains(line, `"result":"created"`) {
			t.Errorf("held import: got %q, want its first device created", line)
		}
		entered <- struct{}{}
		<-release
		pw.Close()
		io.Copy(io.Discard, resp.Body)
		done <- resp.StatusCode
	}()
	if _, err := io.WriteString(pw, `{"deviceId":"held-1","hub":"main","auth":{"type":"hs256"}}`+"\n"); err != nil {
		t.Fatal(err)
	}
	<-entered
	resp, body := e.rawRequest(http.MethodGet, "/hubs", adminToken, "", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("while one request is in flight: got %d Retry-After %q %s, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// Probes and scrapes are never shed.
	if resp, _ := e.rawRequest(http.MethodGet, "/healthz", "", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz while saturated: got %d, want 200", resp.StatusCode)
	}
	close(release)
	if got := <-done; got != http.StatusOK {
		t.Errorf("held import: got %d, want 200", got)
	}
	if resp, _ := e.rawRequest(http.MethodGet, "/hubs", adminToken, "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("after release: got %d, want 200", resp.StatusCode)
	}
	if got := sample(e.scrape(), `tokensvc_rate_limited_total{limit="inflight"}`); got != 1 {
		t.Errorf("rate_limited_total{limit=inflight}: got %v, want 1", got)
	}
}

func TestAuditRecords(t *testing.T) {
	e := mustOpsEnv(t, nil)
	secret, key := e.provision()
	a := e.hs256(secretDevice, secret)
	resp := e.getToken(a, nil)
	if resp.JSON200 == nil {
		t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	if r, err := e.admin.DeleteDeviceWithResponse(t.Context(), secretDevice); err != nil || r.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete device: %v %v", r.StatusCode(), err)
	}
	if r, err := e.admin.DeleteHubWithResponse(t.Context(), "nope"); err != nil || r.StatusCode() != http.StatusNotFound {
		t.Fatalf("delete missing hub: %v %v", r.StatusCode(), err)
	}

	out := e.audit.String()
	for _, s := range []string{secret, key, a, resp.JSON200.Token, adminToken} {
		if strings.Contains(out, s) {
			t.Errorf("audit log holds a secret: %.24q…", s)
		}
	}
	var recs []map[string]any
	for line := range strings.Lines(out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line is not JSON: %v", err)
		}
		if m["requestId"] == "" || m["requestId"] == nil || m["time"] == nil {
			t.Errorf("record without time or requestId: %v", m)
		}
		delete(m, "requestId")
		delete(m, "time")
		recs = append(recs, m)
	}
	exp := resp.JSON200.ExpiresAt.UTC().Format(time.RFC3339)
	want := []map[string]any{
		{"event": "createHub", "actor": "admin", "role": "admin", "hub": "main", "outcome": "success", "status": 201.0},
		{"event": "createDevice", "actor": "admin", "role": "admin", "device": secretDevice, "hub": "main", "outcome": "success", "status": 201.0},
		{"event": "getToken", "actor": secretDevice, "device": secretDevice, "hub": "main", "expiresAt": exp, "outcome": "issued"},
		{"event": "deleteDevice", "actor": "admin", "role": "admin", "device": secretDevice, "outcome": "success", "status": 204.0},
		{"event": "deleteHub", "actor": "admin", "role": "admin", "hub": "nope", "outcome": "failure", "status": 404.0},
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d:\n%s", len(recs), len(want), out)
	}
	for i := range want {
		for k, v := range want[i] {
			if recs[i][k] != v {
				t.Errorf("record %d field %s: got %v, want %v", i, k, recs[i][k], v)
			}
		}
		if len(recs[i]) != len(want[i]) {
			t.Errorf("record %d: got fields %v, want %v", i, recs[i], want[i])
		}
	}
}

// mustIssuer is a local OIDC issuer publishing one ES256 key; sign makes its tokens.
func mustIssuer(t *testing.T) (url string, sign func(claims jwt.MapClaims) string) {
	t.Helper()
	key := testca.P256Key(t)
	pub, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks := map[string]any{"keys": []map[string]string{{"kty": "EC", "kid": "k1", "crv": "P-256", "x": b64(pub[1:33]), "y": b64(pub[33:])}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jwks)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(claims jwt.MapClaims) string {
		claims["iss"] = srv.URL
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
		tok.Header["kid"] = "k1"
		signed, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
}

// TestOperatorRoles: operators with JWTs from a real (local) OIDC issuer, configured as
// an operator would configure it, get what their role allows.
func TestOperatorRoles(t *testing.T) {
	issuer, sign := mustIssuer(t)
	e := mustOpsEnv(t, func(c *app.Config) {
		c.OIDC.Issuer, c.OIDC.Audience, c.OIDC.JWKSURL = issuer, "tokensvc-operators", issuer+"/keys"
		c.OIDC.Algorithms = []string{"ES256"}
	})
	operatorJWT := func(sub string, roles ...string) string {
		now := e.clock.Now()
		claims := jwt.MapClaims{"sub": sub, "aud": "tokensvc-operators", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if len(roles) > 0 {
			claims["roles"] = roles
		}
		return sign(claims)
	}
	reader, operator, norole := operatorJWT("rita", "reader"), operatorJWT("otto", "operator"), operatorJWT("nina")
	hub := `{"name":"main","kind":"iothub","hostname":"` + hubHost + `"}`
	tests := []struct {
		name   string
		method string
		path   string
		bearer string
		body   string
		want   int
	}{
		{"reader lists", http.MethodGet, "/hubs", reader, "", http.StatusOK},
		{"reader cannot create", http.MethodPost, "/hubs", reader, hub, http.StatusForbidden},
		{"no role cannot list", http.MethodGet, "/hubs", norole, "", http.StatusForbidden},
		{"unknown JWT", http.MethodGet, "/hubs", "x.y.z", "", http.StatusUnauthorized},
		{"operator creates", http.MethodPost, "/hubs", operator, hub, http.StatusCreated},
		{"reader cannot delete", http.MethodDelete, "/hubs/main", reader, "", http.StatusForbidden},
		{"static admin still works", http.MethodGet, "/hubs/main", adminToken, "", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct := ""
			if tc.body != "" {
				ct = "application/json"
			}
			resp, body := e.rawRequest(tc.method, tc.path, tc.bearer, ct, strings.NewReader(tc.body))
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("Content-Type: got %q, want application/problem+json", resp.Header.Get("Content-Type"))
			}
		})
	}
	out := e.audit.String()
	if !strings.Contains(out, `"event":"createHub","actor":"otto","role":"operator"`) {
		t.Errorf("audit lacks otto's createHub:\n%s", out)
	}
	if !strings.Contains(out, `"event":"createHub","actor":"rita","role":"reader","outcome":"denied","status":403`) {
		t.Errorf("audit lacks rita's denied createHub:\n%s", out)
	}
	if strings.Contains(out, `"actor":"rita","role":"reader","outcome":"success"`) || strings.Contains(out, "nina") {
		t.Errorf("reads or unauthenticated requests were audited:\n%s", out)
	}
}

// BenchmarkGetTokenObserved is BenchmarkGetToken with metrics, limits (generous enough
// never to refuse) and audit records (to a discarding sink) wired as in production, so
// their cost on the hot path shows beside the plain one.
func BenchmarkGetTokenObserved(b *testing.B) {
	e := mustEnvWith(b, envOptions{stdout: io.Discard, config: func(c *app.Config) {
		c.Limits = limits.Config{DeviceRate: 1e9, DeviceBurst: 1 << 30, GlobalRate: 1e9, MaxInflight: 1024}
	}})
	benchGetToken(b, e)
}

// TestJWTCredentialsNeverLeak: for an awsiot hub with signing, the minted JWT, the
// authorizer signature and the issuer's private keys appear in no log line, audit
// record or metric, and the ring's private keys in no API response; the store holds
// them only inside its encrypted file.
func TestJWTCredentialsNeverLeak(t *testing.T) {
	e := mustOpsEnv(t, func(c *app.Config) { c.Issuer.Issuer = "https://tokens.example.com" })
	e.mustHub(oapi.HubCreate{Name: "aws", Kind: oapi.Awsiot, Hostname: "a1b2c3-ats.iot.eu-west-1.amazonaws.com",
		AuthorizerName: ptr("tokensvc"), TokenKeyName: ptr("tok")})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: secretDevice, Hub: "aws", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	resp := e.getToken(e.hs256(secretDevice, *c.Auth.Secret), nil)
	if resp.JSON200 == nil || resp.JSON200.Signature == nil {
		t.Fatalf("got %d %s, want 200 with a token and a signature", resp.StatusCode(), resp.Body)
	}
	tok, sig := resp.JSON200.Token, *resp.JSON200.Signature
	ring, err := e.store.GetSetting(t.Context(), "issuer-keys")
	if err != nil {
		t.Fatal(err)
	}
	var stored struct {
		Keys []struct {
			Private []byte `json:"private"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(ring, &stored); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"token": tok, "token signature": tok[strings.LastIndexByte(tok, '.')+1:], "authorizer signature": sig}
	for i, k := range stored.Keys {
		if len(k.Private) == 0 {
			t.Fatalf("stored key %d: no private key to look for (the ring's stored form changed?): %s", i, ring)
		}
		secrets["private key "+strconv.Itoa(i)] = base64.StdEncoding.EncodeToString(k.Private)[8:40]
	}
	if !strings.Contains(e.audit.String(), `"event":"getToken"`) || !strings.Contains(e.logBuf.String(), secretDevice) {
		t.Fatalf("the token request left no audit record or log line to look in:\n%s\n%s", e.audit.String(), e.logBuf.String())
	}
	var responses strings.Builder
	for _, path := range []string{"/.well-known/jwks.json", "/issuer/keys", "/hubs/aws"} {
		_, body := e.rawRequest(http.MethodGet, path, adminToken, "", nil)
		responses.Write(body)
	}
	for where, text := range map[string]string{"log": e.logBuf.String(), "audit": e.audit.String(), "metrics": e.scrape(), "API responses": responses.String()} {
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the %s", where, what)
			}
		}
		if strings.Contains(text, "PRIVATE KEY") {
			t.Errorf("%s holds a PEM private key", where)
		}
	}
}
