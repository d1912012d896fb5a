package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tokensvc/tokensvc/api"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

func TestOperatorAuth(t *testing.T) {
	e := mustEnv(t)
	for _, tc := range []struct{ name, token string }{{"missing", ""}, {"wrong", "not-the-admin-token"}, {"admin token with a suffix", adminToken + "x"}} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustClient(t, e.url, tc.token)
			resp, err := c.CreateHubWithResponse(t.Context(), oapi.HubCreate{Name: "h", Kind: oapi.Iothub, Hostname: hubHost})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 401 || resp.HTTPResponse.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("got %d %s, want 401 with WWW-Authenticate", resp.StatusCode(), resp.Body)
			}
			list, err := c.ListDevicesWithResponse(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if list.StatusCode() != 401 {
				t.Errorf("list devices: got %d, want 401", list.StatusCode())
			}
		})
	}
	hubs, err := e.admin.ListHubsWithResponse(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(hubs.JSON200.Items) != 0 {
		t.Errorf("unauthenticated create changed state: got %d hubs, want 0", len(hubs.JSON200.Items))
	}
	// A device assertion is no operator credential.
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: "d1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	resp, err := mustClient(t, e.url, e.hs256("d1", *c.Auth.Secret)).GetDeviceWithResponse(t.Context(), "d1")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 401 {
		t.Errorf("device assertion on the operator API: got %d, want 401", resp.StatusCode())
	}
}

func TestDeviceLifecycle(t *testing.T) {
	e := mustEnv(t)
	ctx := t.Context()
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	ids := []string{"Dev.With:Colons@site=7$x", "paren(1)*star!quote'", "pct%41", "a", "A", "b-2"}
	created := map[string]oapi.DeviceCreated{}
	for _, id := range ids {
		created[id] = e.mustDevice(oapi.DeviceCreate{DeviceId: id, Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, PrimaryKey: ptr(policyKey)})
	}
	if got := deref(created["a"].PrimaryKey); got != policyKey {
		t.Errorf("supplied key: got %q, want it kept", got)
	}

	for _, id := range ids {
		resp, err := e.admin.GetDeviceWithResponse(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil || resp.JSON200.DeviceId != id {
			t.Fatalf("get %q: got %d %s", id, resp.StatusCode(), resp.Body)
		}
		for _, secret := range []string{deref(created[id].PrimaryKey), deref(created[id].SecondaryKey), deref(created[id].Auth.Secret)} {
			if bytes.Contains(resp.Body, []byte(secret)) {
				t.Errorf("GET /devices/%s returns a secret", id)
			}
		}
	}

	// Paging returns every device once, in ID order (case-sensitive).
	var got []string
	cursor := (*string)(nil)
	for pages := 0; pages < 10; pages++ {
		resp, err := e.admin.ListDevicesWithResponse(ctx, &oapi.ListDevicesParams{Limit: ptr(4), Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("list: got %d %s", resp.StatusCode(), resp.Body)
		}
		for _, d := range resp.JSON200.Items {
			got = append(got, d.DeviceId)
		}
		if cursor = resp.JSON200.Next; cursor == nil {
			break
		}
	}
	want := []string{"A", "Dev.With:Colons@site=7$x", "a", "b-2", "paren(1)*star!quote'", "pct%41"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("list: got %q, want %q", got, want)
	}

	// Disable, then a token is refused; enable, then it is minted again.
	for _, disabled := range []bool{true, false} {
		resp, err := e.admin.UpdateDeviceWithResponse(ctx, "a", oapi.DevicePatch{Disabled: ptr(disabled)})
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil || resp.JSON200.Disabled != disabled {
			t.Fatalf("patch disabled=%v: got %d %s", disabled, resp.StatusCode(), resp.Body)
		}
		tok := e.getToken(e.hs256("a", *created["a"].Auth.Secret), nil)
		if wantStatus := map[bool]int{true: 401, false: 200}[disabled]; tok.StatusCode() != wantStatus {
			t.Errorf("token while disabled=%v: got %d, want %d", disabled, tok.StatusCode(), wantStatus)
		}
	}

	// A hub with devices cannot go; a deleted device is gone and its assertions refused.
	if resp, _ := e.admin.DeleteHubWithResponse(ctx, "main"); resp.StatusCode() != 409 {
		t.Errorf("delete hub in use: got %d, want 409", resp.StatusCode())
	}
	if resp, _ := e.admin.DeleteDeviceWithResponse(ctx, "a"); resp.StatusCode() != 204 {
		t.Errorf("delete device: got %d, want 204", resp.StatusCode())
	}
	if resp, _ := e.admin.GetDeviceWithResponse(ctx, "a"); resp.StatusCode() != 404 {
		t.Errorf("get deleted device: got %d, want 404", resp.StatusCode())
	}
	if tok := e.getToken(e.hs256("a", *created["a"].Auth.Secret), nil); tok.StatusCode() != 401 {
		t.Errorf("token for deleted device: got %d, want 401", tok.StatusCode())
	}
	if resp, _ := e.admin.DeleteDeviceWithResponse(ctx, "a"); resp.StatusCode() != 404 {
		t.Errorf("delete twice: got %d, want 404", resp.StatusCode())
	}
}

// TestBadInput sends malformed and contract-breaking requests to every endpoint. Each
// must be a 4xx problem+json with a detail, and change nothing.
func TestBadInput(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	e.mustHub(oapi.HubCreate{Name: "pol", Kind: oapi.Iothub, Hostname: hubHost, Mode: ptr(oapi.Policy), PolicyName: ptr("p"), PolicyKey: ptr(policyKey)})
	e.mustHub(oapi.HubCreate{Name: "eh", Kind: oapi.Eventhubs, Hostname: "ns.servicebus.windows.net", EntityPath: ptr("e"), PolicyName: ptr("s"), PolicyKey: ptr("k")})
	dev := e.mustDevice(oapi.DeviceCreate{DeviceId: "d1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	_, ecPub := mustECKey(t)
	_, edPub := mustEdKey(t)
	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	hub := func(extra string) string {
		return `{"name":"h2","kind":"iothub","hostname":"x.azure-devices.net"` + extra + `}`
	}
	device := func(extra string) string {
		return `{"deviceId":"d2","hub":"main","auth":{"type":"hs256"}` + extra + `}`
	}

	tests := []struct {
		name, method, path, body string
		auth                     string
		want                     int
	}{
		{"hub: not JSON", "POST", "/hubs", "{", adminToken, 400},
		{"hub: unknown field", "POST", "/hubs", hub(`,"colour":"red"`), adminToken, 400},
		{"hub: missing hostname", "POST", "/hubs", `{"name":"h2","kind":"iothub"}`, adminToken, 400},
		{"hub: bad kind", "POST", "/hubs", `{"name":"h2","kind":"mqtt","hostname":"x"}`, adminToken, 400},
		{"hub: bad name", "POST", "/hubs", `{"name":"a b","kind":"iothub","hostname":"x"}`, adminToken, 400},
		{"hub: bad hostname", "POST", "/hubs", `{"name":"h2","kind":"iothub","hostname":"x/../y"}`, adminToken, 400},
		{"hub: policy mode without key", "POST", "/hubs", hub(`,"mode":"policy","policyName":"p"`), adminToken, 400},
		{"hub: policy key not base64", "POST", "/hubs", hub(`,"mode":"policy","policyName":"p","policyKey":"%%%"`), adminToken, 400},
		{"hub: group key on iothub", "POST", "/hubs", hub(`,"mode":"groupKey","policyKey":"` + policyKey + `"`), adminToken, 400},
		{"hub: eventhubs without entity", "POST", "/hubs", `{"name":"h2","kind":"eventhubs","hostname":"ns.servicebus.windows.net","policyName":"p","policyKey":"k"}`, adminToken, 400},
		{"hub: dps without id scope", "POST", "/hubs", `{"name":"h2","kind":"dps","hostname":"global.azure-devices-provisioning.net"}`, adminToken, 400},
		{"hub: default ttl above max", "POST", "/hubs", hub(`,"defaultTtlSeconds":7200,"maxTtlSeconds":3600`), adminToken, 400},
		{"hub: ttl below minimum", "POST", "/hubs", hub(`,"defaultTtlSeconds":1`), adminToken, 400},
		{"hub: ca cert not PEM", "POST", "/hubs", hub(`,"caCert":"hello"`), adminToken, 400},
		{"hub: transit on the embedded store", "POST", "/hubs", hub(`,"transit":true`), adminToken, 400},
		{"hub: a setting the kind does not take", "POST", "/hubs", hub(`,"settings":{"authorizerName":"a"}`), adminToken, 400},
		{"hub: a setting that is not a string", "POST", "/hubs", hub(`,"settings":{"n":1}`), adminToken, 400},
		{"hub: duplicate", "POST", "/hubs", `{"name":"main","kind":"iothub","hostname":"x.azure-devices.net"}`, adminToken, 409},
		{"hub: wrong content type", "POST", "/hubs", "name=h2", adminToken, 400},
		{"hub: get unknown", "GET", "/hubs/nope", "", adminToken, 404},
		{"hub: bad name in path", "GET", "/hubs/" + url.PathEscape("a b"), "", adminToken, 400},
		{"hub: delete unknown", "DELETE", "/hubs/nope", "", adminToken, 404},
		{"device: not JSON", "POST", "/devices", "[1,2", adminToken, 400},
		{"device: missing auth", "POST", "/devices", `{"deviceId":"d2","hub":"main"}`, adminToken, 400},
		{"device: bad id", "POST", "/devices", `{"deviceId":"has space","hub":"main","auth":{"type":"hs256"}}`, adminToken, 400},
		{"device: id too long", "POST", "/devices", `{"deviceId":"` + strings.Repeat("a", 129) + `","hub":"main","auth":{"type":"hs256"}}`, adminToken, 400},
		{"device: unknown hub", "POST", "/devices", `{"deviceId":"d2","hub":"nope","auth":{"type":"hs256"}}`, adminToken, 404},
		{"device: duplicate", "POST", "/devices", `{"deviceId":"d1","hub":"main","auth":{"type":"hs256"}}`, adminToken, 409},
		{"device: bad key", "POST", "/devices", device(`,"primaryKey":"not base64!"`), adminToken, 400},
		{"device: short key", "POST", "/devices", device(`,"primaryKey":"c2hvcnQ="`), adminToken, 400},
		{"device: key on policy hub", "POST", "/devices", `{"deviceId":"d2","hub":"pol","auth":{"type":"hs256"},"primaryKey":"` + policyKey + `"}`, adminToken, 400},
		{"device: module on eventhubs", "POST", "/devices", `{"deviceId":"d2","hub":"eh","auth":{"type":"hs256"},"modules":[{"moduleId":"m"}]}`, adminToken, 400},
		{"device: duplicate module", "POST", "/devices", device(`,"modules":[{"moduleId":"m"},{"moduleId":"m"}]`), adminToken, 400},
		{"device: unknown credential", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"rs256"}}`, adminToken, 400},
		{"device: hs256 with public key", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"hs256","publicKey":` + js(ecPub) + `}}`, adminToken, 400},
		{"device: es256 without public key", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"es256"}}`, adminToken, 400},
		{"device: es256 with an Ed25519 key", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"es256","publicKey":` + js(edPub) + `}}`, adminToken, 400},
		{"device: eddsa with a P-256 key", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"eddsa","publicKey":` + js(ecPub) + `}}`, adminToken, 400},
		{"device: public key not PEM", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"es256","publicKey":"abc"}}`, adminToken, 400},
		{"device: oversized body", "POST", "/devices", device(`,"pad":"` + strings.Repeat("x", 2<<20) + `"`), adminToken, 413},
		{"device: get unknown", "GET", "/devices/nope", "", adminToken, 404},
		{"device: encoded slash in path", "GET", "/devices/" + url.PathEscape("a/b"), "", adminToken, 400},
		{"device: encoded NUL in path", "GET", "/devices/a%00b", "", adminToken, 400},
		{"device: encoded space in path", "DELETE", "/devices/a%20b", "", adminToken, 400},
		{"device: encoded slash in patch path", "PATCH", "/devices/%2F", `{"disabled":true}`, adminToken, 400},
		{"device: trailing data", "POST", "/devices", device("") + ` {"a":1}`, adminToken, 400},
		{"device: duplicate key", "POST", "/devices", `{"deviceId":"d2","deviceId":"d3","hub":"main","auth":{"type":"hs256"}}`, adminToken, 400},
		{"device: duplicate nested key", "POST", "/devices", `{"deviceId":"d2","hub":"main","auth":{"type":"hs256","type":"es256"}}`, adminToken, 400},
		{"device: number where an integer is due", "POST", "/devices", device(`,"maxTtlSeconds":1e2`), adminToken, 400},
		{"device: deep nesting", "POST", "/devices", strings.Repeat("[", 100) + strings.Repeat("]", 100), adminToken, 400},
		{"hub: unauthenticated bad body gets 401, not a schema hint", "POST", "/hubs", `{"nam":1}`, "", 401},
		{"token: unauthenticated bad query gets 401", "GET", "/token?ttl=1", "", "garbage", 401},
		{"device: list limit 0", "GET", "/devices?limit=0", "", adminToken, 400},
		{"device: list limit not a number", "GET", "/devices?limit=ten", "", adminToken, 400},
		{"device: list cursor too long", "GET", "/devices?cursor=" + strings.Repeat("c", 600), "", adminToken, 400},
		{"device: patch empty", "PATCH", "/devices/d1", `{}`, adminToken, 400},
		{"device: patch unknown field", "PATCH", "/devices/d1", `{"hub":"pol"}`, adminToken, 400},
		{"device: patch wrong type", "PATCH", "/devices/d1", `{"disabled":"yes"}`, adminToken, 400},
		{"device: patch ttl too small", "PATCH", "/devices/d1", `{"maxTtlSeconds":5}`, adminToken, 400},
		{"device: patch unknown", "PATCH", "/devices/nope", `{"disabled":true}`, adminToken, 404},
		{"token: ttl too small", "GET", "/token?ttl=1", "", e.hs256("d1", *dev.Auth.Secret), 400},
		{"token: ttl not a number", "GET", "/token?ttl=abc", "", e.hs256("d1", *dev.Auth.Secret), 400},
		{"token: bad transport", "GET", "/token?transport=udp", "", e.hs256("d1", *dev.Auth.Secret), 400},
		{"token: bad module id", "GET", "/token?module=" + url.QueryEscape("a b"), "", e.hs256("d1", *dev.Auth.Secret), 400},
		{"device: utf-16 charset", "POST", "/devices", device(""), adminToken, 415},
		{"unknown route", "GET", "/nope", "", adminToken, 404},
		{"wrong method", "PUT", "/hubs", "{}", adminToken, 405},
	}
	before := e.snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := ""
			if tt.body != "" {
				ct = "application/json"
				switch tt.name {
				case "hub: wrong content type":
					ct = "application/x-www-form-urlencoded"
				case "device: utf-16 charset":
					ct = "application/json; charset=utf-16"
				}
			}
			resp, body := e.rawRequest(tt.method, tt.path, tt.auth, ct, strings.NewReader(tt.body))
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tt.want)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/problem+json" {
				t.Errorf("Content-Type: got %q, want application/problem+json", got)
			}
			var p oapi.Problem
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("body is not a problem document: %v: %s", err, body)
			}
			if p.Status != tt.want || p.Title == "" || deref(p.Detail) == "" {
				t.Errorf("problem: got %+v, want status %d with title and detail", p, tt.want)
			}
		})
	}
	if after := e.snapshot(); after != before {
		t.Errorf("bad input changed state:\nbefore %s\nafter  %s", before, after)
	}
}

// snapshot is the operator-visible state, for checking that nothing changed.
func (e *env) snapshot() string {
	e.t.Helper()
	hubs, err := e.admin.ListHubsWithResponse(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	devs, err := e.admin.ListDevicesWithResponse(e.t.Context(), &oapi.ListDevicesParams{Limit: ptr(1000)})
	if err != nil {
		e.t.Fatal(err)
	}
	return string(hubs.Body) + string(devs.Body)
}

func TestServesSpec(t *testing.T) {
	e := mustEnv(t)
	resp, body := e.rawRequest(http.MethodGet, "/openapi.yaml", "", "", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, api.Spec) {
		t.Fatalf("got %d and %d bytes, want 200 and the embedded spec (%d bytes)", resp.StatusCode, len(body), len(api.Spec))
	}
}

func TestHealth(t *testing.T) {
	e := mustEnv(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := e.rawRequest(http.MethodGet, path, "", "", nil)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok"`) {
			t.Errorf("%s: got %d %s", path, resp.StatusCode, body)
		}
	}
}

// TestEveryOperationIsGuarded walks the spec: every operation that is not explicitly
// public must refuse a request with no credential and with a wrong one, before looking
// at anything else in it.
func TestEveryOperationIsGuarded(t *testing.T) {
	e := mustEnv(t)
	spec, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		t.Fatal(err)
	}
	// A real issuer key, so the public per-key paths are served (200), not just refused.
	rot, err := e.admin.RotateIssuerKeyWithResponse(t.Context(), oapi.IssuerKeyRotate{Alg: "ES256"})
	if err != nil || rot.JSON201 == nil {
		t.Fatalf("rotate issuer key: %v", err)
	}
	guarded := 0
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			reqs := spec.Security
			if op.Security != nil {
				reqs = *op.Security
			}
			concrete := strings.NewReplacer("{name}", "main", "{deviceId}", "d1", "{kid}", rot.JSON201.Kid).Replace(path)
			if len(reqs) == 0 {
				resp, _ := e.rawRequest(method, concrete, "", "", nil)
				if resp.StatusCode != 200 {
					t.Errorf("public %s %s: got %d, want 200", method, path, resp.StatusCode)
				}
				if strings.Contains(path, "{kid}") {
					// An unknown key is a 404, still without a credential.
					other := strings.ReplaceAll(path, "{kid}", "no-such-key")
					if resp, _ := e.rawRequest(method, other, "", "", nil); resp.StatusCode != 404 {
						t.Errorf("public %s %s: got %d, want 404", method, other, resp.StatusCode)
					}
				}
				continue
			}
			guarded++
			for _, cred := range []string{"", "wrong-credential", adminToken + "x"} {
				resp, body := e.rawRequest(method, concrete, cred, "application/json", strings.NewReader(`{"disabled":true}`))
				if resp.StatusCode != 401 {
					t.Errorf("%s %s with credential %q: got %d %s, want 401", method, path, cred, resp.StatusCode, body)
				}
			}
		}
	}
	if guarded < 10 {
		t.Fatalf("only %d guarded operations found; the spec walk is broken", guarded)
	}
}

func TestContentEncodingRefused(t *testing.T) {
	e := mustEnv(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.url+"/hubs", strings.NewReader(`{"name":"h","kind":"iothub","hostname":"x.azure-devices.net"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("got %d, want 415", resp.StatusCode)
	}
	if s := e.snapshot(); strings.Contains(s, `"name":"h"`) {
		t.Errorf("refused request created a hub: %s", s)
	}
}

func TestReadinessFollowsStore(t *testing.T) {
	st, err := filestore.Open(filepath.Join(t.TempDir(), "tokensvc.db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	outage := apptest.NewOutage(st)
	e := mustEnvWith(t, envOptions{store: outage})
	if resp, body := e.rawRequest(http.MethodGet, "/readyz", "", "", nil); resp.StatusCode != 200 {
		t.Fatalf("readyz: got %d %s, want 200", resp.StatusCode, body)
	}
	outage.SetDown(true)
	resp, body := e.rawRequest(http.MethodGet, "/readyz", "", "", nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("readyz with the store unreachable: got %d %s (Retry-After %q), want 503 with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
}
