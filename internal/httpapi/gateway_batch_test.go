package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

func (f *gwFixture) batch(caller string, params *oapi.GetTokenBatchParams, ids ...string) *oapi.GetTokenBatchResponse {
	f.t.Helper()
	if params == nil {
		params = &oapi.GetTokenBatchParams{}
	}
	resp, err := f.anon.GetTokenBatchWithResponse(f.t.Context(), params, oapi.TokenBatchRequest{Devices: ids}, bearer(f.as(caller)))
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

// TestTokenBatchAuthorization: one entry per requested ID in request order; the
// gateway's enabled children get their own tokens, every other ID the one 403 — in
// the entry, never failing the request.
func TestTokenBatchAuthorization(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	tests := []struct {
		id           string
		wantStatus   int // 0: a token
		wantResource string
	}{
		{"leaf-1", 0, hubHost + "/devices/leaf-1"},
		{"leaf-g2", 403, ""},  // another gateway's child
		{"plain", 403, ""},    // no parent
		{"ghost", 403, ""},    // does not exist
		{"leaf-off", 403, ""}, // disabled child
		{"gw-2", 403, ""},     // another gateway
		{"gw-1", 403, ""},     // the caller itself: a batch is for children only
		{"leaf-2", 0, hubHost + "/devices/leaf-2"},
		{"leaf-o", 403, ""},                        // another hub's child
		{"leaf-1", 0, hubHost + "/devices/leaf-1"}, // repeated: answered again
	}
	var ids []string
	for _, tt := range tests {
		ids = append(ids, tt.id)
	}
	resp := f.batch("gw-1", nil, ids...)
	if resp.JSON200 == nil {
		t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	h := resp.HTTPResponse.Header
	if h.Get("Cache-Control") != "no-store" || h.Get("Content-Type") != "application/json" {
		t.Errorf("headers: Cache-Control %q Content-Type %q, want no-store, application/json", h.Get("Cache-Control"), h.Get("Content-Type"))
	}
	if strings.Contains(string(resp.Body), `\u0026`) {
		t.Error("the batch body HTML-escapes tokens")
	}
	results := resp.JSON200.Results
	if len(results) != len(tests) {
		t.Fatalf("results: got %d, want %d", len(results), len(tests))
	}
	var refusal string
	for i, tt := range tests {
		r := results[i]
		t.Run(fmt.Sprintf("%d-%s", i, tt.id), func(t *testing.T) {
			if r.DeviceId != tt.id {
				t.Fatalf("deviceId: got %q, want %q (request order)", r.DeviceId, tt.id)
			}
			if tt.wantStatus != 0 {
				if r.Error == nil || r.Error.Status != tt.wantStatus || r.Token != nil {
					t.Fatalf("got %+v, want only an error %d", r, tt.wantStatus)
				}
				b, _ := json.Marshal(r.Error)
				if refusal == "" {
					refusal = string(b)
				} else if string(b) != refusal {
					t.Errorf("refusal: got %s, want the same as every other (%s)", b, refusal)
				}
				return
			}
			if r.Error != nil || r.Token == nil {
				t.Fatalf("got %+v, want a token", r)
			}
			p := mustVerify(t, *r.Token, f.key[tt.id], signer.KeyBase64, f.clock.Now())
			if p.Resource != tt.wantResource || deref(r.Resource) != tt.wantResource || r.Mqtt == nil || r.Mqtt.ClientId != tt.id {
				t.Errorf("resource %q / %q, mqtt %+v; want %q and client ID %q", p.Resource, deref(r.Resource), r.Mqtt, tt.wantResource, tt.id)
			}
			if deref(r.ExpiresIn) != 3600 || deref(r.Hub) != "main" || r.ExpiresAt == nil || r.RefreshAfter == nil || r.ServerTime == nil || r.Kind == nil {
				t.Errorf("token fields: %+v", r)
			}
		})
	}
	if !strings.Contains(refusal, "the caller may not have tokens for that device") {
		t.Errorf("refusal: got %s", refusal)
	}
	// One audit record per entry, each naming the gateway.
	n := 0
	for _, r := range f.auditRecords() {
		if r.Event == "getToken" && r.Gateway == "gw-1" && r.Actor == "gw-1" {
			n++
		}
	}
	if n != len(tests) {
		t.Errorf("audit records naming gw-1: got %d, want %d\n%s", n, len(tests), f.audit.String())
	}
}

// TestTokenBatchRequestRefused: whole-request failures are the usual problems.
func TestTokenBatchRequestRefused(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	many := make([]string, 501)
	for i := range many {
		many[i] = "leaf-1"
	}
	manyJSON, _ := json.Marshal(map[string]any{"devices": many})
	tests := []struct {
		name, caller, query, body string
		noAuth                    bool
		want                      int
	}{
		{name: "an ordinary device", caller: "plain", body: `{"devices":["leaf-1"]}`, want: 403},
		{name: "a leaf", caller: "leaf-1", body: `{"devices":["leaf-2"]}`, want: 403},
		{name: "no credential", noAuth: true, body: `{"devices":["leaf-1"]}`, want: 401},
		{name: "empty list", caller: "gw-1", body: `{"devices":[]}`, want: 400},
		{name: "501 IDs", caller: "gw-1", body: string(manyJSON), want: 400},
		{name: "an invalid ID", caller: "gw-1", body: `{"devices":["leaf-1","a/b"]}`, want: 400},
		{name: "no devices field", caller: "gw-1", body: `{}`, want: 400},
		{name: "an unknown field", caller: "gw-1", body: `{"devices":["leaf-1"],"ttl":600}`, want: 400},
		{name: "not JSON", caller: "gw-1", body: `devices=leaf-1`, want: 400},
		{name: "duplicate keys", caller: "gw-1", body: `{"devices":["leaf-1"],"devices":["leaf-g2"]}`, want: 400},
		{name: "ttl below the minimum", caller: "gw-1", query: "?ttl=30", body: `{"devices":["leaf-1"]}`, want: 400},
		{name: "unknown transport", caller: "gw-1", query: "?transport=udp", body: `{"devices":["leaf-1"]}`, want: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := ""
			if !tt.noAuth {
				auth = f.as(tt.caller)
			}
			resp, body := f.rawRequest(http.MethodPost, "/token/batch"+tt.query, auth, "application/json", strings.NewReader(tt.body))
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("got %d %s %s, want a %d problem", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.want)
			}
		})
	}
	if n := strings.Count(f.audit.String(), `"outcome":"issued"`); n != 0 {
		t.Errorf("refused batches issued %d tokens", n)
	}
}

func TestTokenBatchOptions(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	resp := f.batch("gw-1", &oapi.GetTokenBatchParams{Ttl: ptr(600), Transport: ptr(oapi.GetTokenBatchParamsTransportWs)}, "leaf-1", "leaf-2")
	if resp.JSON200 == nil {
		t.Fatalf("got %d %s", resp.StatusCode(), resp.Body)
	}
	for _, r := range resp.JSON200.Results {
		if deref(r.ExpiresIn) != 600 || r.Mqtt == nil || r.Mqtt.Port != 443 {
			t.Errorf("%s: expiresIn %d, mqtt %+v; want 600 s over WebSocket (443)", r.DeviceId, deref(r.ExpiresIn), r.Mqtt)
		}
	}
}

// TestTokenBatchPartialFailures: a child's rate limit or its record being unreadable
// is that entry's problem; the others are served and the request is a 200.
func TestTokenBatchPartialFailures(t *testing.T) {
	st, err := filestore.Open(filepath.Join(t.TempDir(), "tokensvc.db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &failingStore{Store: st, id: "leaf-off"}
	f := mustGatewayFixture(t, envOptions{store: fs, config: func(c *app.Config) {
		c.Limits = limits.Config{DeviceRate: 0.2, DeviceBurst: 2}
	}})
	fs.id = "leaf-2"
	fs.armed.Store(true)
	resp := f.batch("gw-1", nil, "leaf-1", "leaf-1", "leaf-1", "leaf-2", "ghost")
	if resp.JSON200 == nil {
		t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	res := resp.JSON200.Results
	issued, limited := 0, 0
	for _, r := range res[:3] {
		switch {
		case r.Token != nil:
			issued++
		case r.Error != nil && r.Error.Status == http.StatusTooManyRequests:
			limited++
		}
	}
	if issued != 2 || limited != 1 {
		t.Errorf("leaf-1 three times with a burst of 2: got %d issued, %d rate-limited; want 2, 1\n%s", issued, limited, resp.Body)
	}
	for _, r := range res[:3] {
		if r.Error != nil && !strings.Contains(deref(r.Error.Detail), "rate limit exceeded; retry after 5 s") {
			t.Errorf("rate-limited entry: detail %q, want the delay (5 s at 0.2/s)", deref(r.Error.Detail))
		}
	}
	if e := res[3].Error; e == nil || e.Status != http.StatusServiceUnavailable || res[3].DeviceId != "leaf-2" {
		t.Errorf("leaf-2 with its record unreadable: got %+v, want a 503 entry", res[3])
	}
	if e := res[4].Error; e == nil || e.Status != http.StatusForbidden {
		t.Errorf("ghost: got %+v, want a 403 entry", res[4])
	}
	if strings.Contains(string(resp.Body), "backend unreachable") {
		t.Errorf("an entry shows the store's internal error: %s", resp.Body)
	}
}

// TestImportGatewaysAndChildren: a file that lists a gateway before its children
// imports both, a child naming a missing or non-gateway parent is rejected, and the
// same file again is all skipped; the children then get tokens through the gateway.
func TestImportGatewaysAndChildren(t *testing.T) {
	e := mustEnvWith(t, envOptions{config: noDeviceLimits})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	csv := "deviceId,hub,authType,gateway,parent\n" +
		"edge-1,main,hs256,true,\n" +
		"sensor-1,main,hs256,,edge-1\n" +
		"sensor-2,main,hs256,false,edge-1\n" +
		"sensor-3,main,hs256,,nobody\n" +
		"sensor-4,main,hs256,,sensor-1\n"
	lines := e.mustImport("text/csv", csv)
	if got, want := results(lines), "edge-1:created sensor-1:created sensor-2:created sensor-3:rejected sensor-4:rejected"; got != want {
		t.Fatalf("import: got %s, want %s", got, want)
	}
	for _, l := range lines[3:5] {
		if !strings.Contains(l.Reason, "parent") {
			t.Errorf("%s rejected for %q, want a reason naming parent", l.DeviceID, l.Reason)
		}
	}
	if got, want := results(e.mustImport("text/csv", csv)), "edge-1:skipped sensor-1:skipped sensor-2:skipped sensor-3:rejected sensor-4:rejected"; got != want {
		t.Errorf("import again: got %s, want %s", got, want)
	}
	gwSecret, sensorKey := lines[0].Auth.Secret, lines[1].PrimaryKey
	resp := e.getToken(e.hs256("edge-1", gwSecret), &oapi.GetTokenParams{Device: ptr("sensor-1")})
	if resp.JSON200 == nil {
		t.Fatalf("imported child's token: got %d %s", resp.StatusCode(), resp.Body)
	}
	mustVerify(t, resp.JSON200.Token, sensorKey, signer.KeyBase64, e.clock.Now())
}

// TestGatewayChildOnPolicyHub: on a hub that signs with a policy key, a child's token
// is the policy token scoped to the child, as the child itself would get.
func TestGatewayChildOnPolicyHub(t *testing.T) {
	e := mustEnvWith(t, envOptions{config: noDeviceLimits})
	e.mustHub(oapi.HubCreate{Name: "pol", Kind: oapi.Iothub, Hostname: hubHost, Mode: ptr(oapi.Policy), PolicyName: ptr("device"), PolicyKey: ptr(policyKey)})
	gw := e.mustDevice(oapi.DeviceCreate{DeviceId: "gw-p", Hub: "pol", Gateway: ptr(true), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	e.mustDevice(oapi.DeviceCreate{DeviceId: "leaf-p", Hub: "pol", Parent: ptr("gw-p"), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	resp := e.getToken(e.hs256("gw-p", *gw.Auth.Secret), &oapi.GetTokenParams{Device: ptr("leaf-p")})
	if resp.JSON200 == nil {
		t.Fatalf("got %d %s", resp.StatusCode(), resp.Body)
	}
	p := mustVerify(t, resp.JSON200.Token, policyKey, signer.KeyBase64, e.clock.Now())
	if want := hubHost + "/devices/leaf-p"; p.Resource != want || p.PolicyName != "device" {
		t.Errorf("got sr %q skn %q, want %q and the hub policy", p.Resource, p.PolicyName, want)
	}
}
