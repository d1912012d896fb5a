package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestRunMetricsAndAuditFile wires metrics and a file audit sink through run: the
// scrape shows token, HTTP and store series without device IDs or secrets, and the audit
// file holds the operator's changes and the issued token, again without secrets.
func TestRunMetricsAndAuditFile(t *testing.T) {
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	const admin = "bootstrap-admin-token-0123456789"
	in := mustStart(t, map[string]string{
		"TOKENSVC_DATA_DIR":    dir,
		"TOKENSVC_ADMIN_TOKEN": admin,
		"TOKENSVC_AUDIT":       "file:" + auditPath,
	})
	c := client(t, in.url, admin)
	apptest.PostHub(t, c, mainHub)
	const id = "meter-4c1d-unique"
	dev := apptest.PostDevice(t, c, hs256(id, "main"))
	secret, primary := *dev.Auth.Secret, *dev.PrimaryKey
	assertion := assertionFor(t, id, secret, "jti-1")
	token := getTokenWith(t, in.url, assertion)

	resp, err := http.Get(in.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	scrape := string(body)
	for _, want := range []string{
		`tokensvc_tokens_issued_total{hub="main",kind="iothub",outcome="issued"} 1`,
		`tokensvc_http_request_duration_seconds_count{code="2xx",method="GET",route="/token"} 1`,
		`tokensvc_store_operation_duration_seconds_count{op="create_device"} 1`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	in.stop(t)

	b, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for line := range strings.Lines(string(b)) {
		var rec struct{ Event, Actor, Device string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line is not JSON: %v", err)
		}
		events = append(events, rec.Event+"/"+rec.Actor)
	}
	if got, want := strings.Join(events, " "), "createHub/admin createDevice/admin getToken/"+id; got != want {
		t.Errorf("audit events: got %q, want %q", got, want)
	}
	for name, s := range map[string]string{"admin token": admin, "secret": secret, "key": primary, "token": token, "assertion": assertion, "signature": sigOf(t, token)} {
		if strings.Contains(string(b), s) {
			t.Errorf("audit file holds the %s", name)
		}
		if strings.Contains(scrape, s) {
			t.Errorf("/metrics holds the %s", name)
		}
	}
	if strings.Contains(scrape, id) {
		t.Error("/metrics holds a device ID")
	}
}

// TestRunOIDCOperators starts the service against a local issuer: a reader JWT may list
// hubs but not create one, an operator JWT may, and the static admin token still works.
func TestRunOIDCOperators(t *testing.T) {
	key := testca.P256Key(t)
	pt, _ := key.PublicKey.Bytes()
	var issuer string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": issuer + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		enc := base64.RawURLEncoding.EncodeToString
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "k1", "x": enc(pt[1:33]), "y": enc(pt[33:])}}})
	})
	idp := httptest.NewServer(mux)
	t.Cleanup(idp.Close)
	issuer = idp.URL

	const admin = "bootstrap-admin-token-0123456789"
	in := mustStart(t, map[string]string{
		"TOKENSVC_DATA_DIR":      t.TempDir(),
		"TOKENSVC_ADMIN_TOKEN":   admin,
		"TOKENSVC_AUDIT":         "off",
		"TOKENSVC_OIDC_ISSUER":   issuer,
		"TOKENSVC_OIDC_AUDIENCE": "tokensvc-ops",
	})
	jwtFor := func(sub, role string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": issuer, "aud": "tokensvc-ops", "sub": sub, "roles": []string{role},
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(),
		})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := t.Context()
	hub := oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: "contoso-hub.azure-devices.net"}
	if r, err := client(t, in.url, jwtFor("rita", "reader")).CreateHubWithResponse(ctx, hub); err != nil || r.StatusCode() != http.StatusForbidden {
		t.Fatalf("reader creates a hub: got %v %v, want 403", r.StatusCode(), err)
	}
	if r, err := client(t, in.url, jwtFor("otto", "operator")).CreateHubWithResponse(ctx, hub); err != nil || r.StatusCode() != http.StatusCreated {
		t.Fatalf("operator creates a hub: got %v %v, want 201", r.StatusCode(), err)
	}
	if r, err := client(t, in.url, jwtFor("rita", "reader")).ListHubsWithResponse(ctx); err != nil || r.JSON200 == nil || len(r.JSON200.Items) != 1 {
		t.Fatalf("reader lists hubs: got %v %v, want 200 with one hub", r.StatusCode(), err)
	}
	if r, err := client(t, in.url, admin).GetHubWithResponse(ctx, "main"); err != nil || r.StatusCode() != http.StatusOK {
		t.Fatalf("static admin: got %v %v, want 200", r.StatusCode(), err)
	}
}

// TestRunMetricsOnOwnAddress serves /metrics on TOKENSVC_METRICS_ADDR only.
func TestRunMetricsOnOwnAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // free for the service to take; loopback ports are not reused at once
	in := mustStart(t, map[string]string{
		"TOKENSVC_DATA_DIR":     t.TempDir(),
		"TOKENSVC_ADMIN_TOKEN":  "bootstrap-admin-token-0123456789",
		"TOKENSVC_METRICS_ADDR": addr,
	})
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("http://" + addr + "/metrics"); got != http.StatusOK {
		t.Errorf("metrics address: got %d, want 200", got)
	}
	if got := get(in.url + "/metrics"); got != http.StatusNotFound {
		t.Errorf("API address /metrics: got %d, want 404", got)
	}
}

// TestPprofOnlyOnMetricsAddress serves the profiler on the metrics listener when asked,
// never on the API listener, and refuses to start it without a metrics address.
func TestPprofOnlyOnMetricsAddress(t *testing.T) {
	if _, err := parseConfig(nil, func(k string) string {
		return map[string]string{"TOKENSVC_PPROF": "true", "TOKENSVC_DATA_DIR": t.TempDir()}[k]
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "TOKENSVC_METRICS_ADDR") {
		t.Fatalf("pprof without a metrics address: got %v, want a refusal naming TOKENSVC_METRICS_ADDR", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	in := mustStart(t, map[string]string{
		"TOKENSVC_DATA_DIR":     t.TempDir(),
		"TOKENSVC_ADMIN_TOKEN":  "bootstrap-admin-token-0123456789",
		"TOKENSVC_METRICS_ADDR": addr,
		"TOKENSVC_PPROF":        "true",
	})
	for _, c := range []struct {
		url  string
		want int
	}{
		{"http://" + addr + "/debug/pprof/", http.StatusOK},
		{"http://" + addr + "/debug/pprof/heap", http.StatusOK},
		{in.url + "/debug/pprof/", http.StatusNotFound},
	} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s: got %d, want %d", c.url, resp.StatusCode, c.want)
		}
	}
}
