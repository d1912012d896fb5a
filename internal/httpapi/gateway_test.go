package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
)

const otherHubHost = "other-hub.azure-devices.net"

// gwFixture is a service with two hubs, three gateways and their children:
//
//	main:  gw-1 (gateway) ← leaf-1, leaf-2 (module m1), leaf-off (disabled)
//	       gw-2 (gateway) ← leaf-g2
//	       plain (no parent)
//	other: gw-o (gateway) ← leaf-o
type gwFixture struct {
	*env
	secret    map[string]string // HS256 secrets by device ID
	key       map[string]string // primary keys by device ID
	moduleKey string            // leaf-2's module m1
}

func noDeviceLimits(c *app.Config) { c.Limits = limits.Config{} }

func mustGatewayFixture(t *testing.T, o envOptions) *gwFixture {
	t.Helper()
	f := &gwFixture{env: mustEnvWith(t, o), secret: map[string]string{}, key: map[string]string{}}
	f.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	f.mustHub(oapi.HubCreate{Name: "other", Kind: oapi.Iothub, Hostname: otherHubHost})
	for _, d := range []oapi.DeviceCreate{
		{DeviceId: "gw-1", Hub: "main", Gateway: ptr(true)},
		{DeviceId: "gw-2", Hub: "main", Gateway: ptr(true)},
		{DeviceId: "gw-o", Hub: "other", Gateway: ptr(true)},
		{DeviceId: "leaf-1", Hub: "main", Parent: ptr("gw-1")},
		{DeviceId: "leaf-2", Hub: "main", Parent: ptr("gw-1"), Modules: &[]oapi.ModuleCreate{{ModuleId: "m1"}}},
		{DeviceId: "leaf-off", Hub: "main", Parent: ptr("gw-1"), Disabled: ptr(true)},
		{DeviceId: "leaf-g2", Hub: "main", Parent: ptr("gw-2")},
		{DeviceId: "leaf-o", Hub: "other", Parent: ptr("gw-o")},
		{DeviceId: "plain", Hub: "main"},
	} {
		d.Auth = oapi.CredentialCreate{Type: oapi.Hs256}
		c := f.mustDevice(d)
		if deref(c.Device.Gateway) != deref(d.Gateway) || deref(c.Device.Parent) != deref(d.Parent) {
			t.Fatalf("created %s: got gateway %v parent %q, want %v %q", d.DeviceId, deref(c.Device.Gateway), deref(c.Device.Parent), deref(d.Gateway), deref(d.Parent))
		}
		f.secret[d.DeviceId], f.key[d.DeviceId] = *c.Auth.Secret, *c.PrimaryKey
		if len(c.Modules) > 0 {
			f.moduleKey = c.Modules[0].PrimaryKey
		}
	}
	return f
}

// as returns caller's assertion.
func (f *gwFixture) as(caller string) string { return f.hs256(caller, f.secret[caller]) }

// auditRecords parses every audit record written so far.
func (f *gwFixture) auditRecords() []audit.Record {
	f.t.Helper()
	var out []audit.Record
	sc := bufio.NewScanner(strings.NewReader(f.audit.String()))
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			f.t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// TestGatewayChildTokenAuthorization is every decision GET /token?device= makes: a
// gateway gets its own enabled children's tokens — the child's own, verifying with
// the child's key — and one identical 403 for every other ID, existing or not.
func TestGatewayChildTokenAuthorization(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	notChild := &sameRefusal{}
	tests := []struct {
		name, caller, device, module string
		wantStatus                   int
		// wantKey verifies the token; wantResource is its sr.
		wantKey, wantResource string
		// sameRefusal: the 403 must read exactly like every other not-your-child 403.
		sameRefusal bool
	}{
		{name: "own child", caller: "gw-1", device: "leaf-1", wantStatus: 200, wantKey: "leaf-1", wantResource: hubHost + "/devices/leaf-1"},
		{name: "own child's module", caller: "gw-1", device: "leaf-2", module: "m1", wantStatus: 200, wantKey: "module", wantResource: hubHost + "/devices/leaf-2/modules/m1"},
		{name: "device= naming the caller itself is its own token", caller: "gw-1", device: "gw-1", wantStatus: 200, wantKey: "gw-1", wantResource: hubHost + "/devices/gw-1"},
		{name: "a leaf naming itself", caller: "leaf-1", device: "leaf-1", wantStatus: 200, wantKey: "leaf-1", wantResource: hubHost + "/devices/leaf-1"},
		{name: "other hub's gateway for its own child", caller: "gw-o", device: "leaf-o", wantStatus: 200, wantKey: "leaf-o", wantResource: otherHubHost + "/devices/leaf-o"},
		{name: "another gateway's child", caller: "gw-1", device: "leaf-g2", wantStatus: 403, sameRefusal: true},
		{name: "a device with no parent", caller: "gw-1", device: "plain", wantStatus: 403, sameRefusal: true},
		{name: "a device that does not exist", caller: "gw-1", device: "ghost", wantStatus: 403, sameRefusal: true},
		{name: "a disabled child", caller: "gw-1", device: "leaf-off", wantStatus: 403, sameRefusal: true},
		{name: "another gateway", caller: "gw-1", device: "gw-2", wantStatus: 403, sameRefusal: true},
		{name: "a child on another hub", caller: "gw-1", device: "leaf-o", wantStatus: 403, sameRefusal: true},
		{name: "other hub's gateway for gw-1's child", caller: "gw-o", device: "leaf-1", wantStatus: 403, sameRefusal: true},
		{name: "a leaf asking for its parent gateway", caller: "leaf-1", device: "gw-1", wantStatus: 403, sameRefusal: true},
		{name: "a leaf asking for its sibling", caller: "leaf-1", device: "leaf-2", wantStatus: 403, sameRefusal: true},
		{name: "a non-gateway asking for a child", caller: "plain", device: "leaf-1", wantStatus: 403, sameRefusal: true},
		{name: "a non-gateway asking for a nonexistent device", caller: "plain", device: "ghost", wantStatus: 403, sameRefusal: true},
		{name: "a non-child's module", caller: "gw-1", device: "leaf-g2", module: "m1", wantStatus: 403, sameRefusal: true},
		// The child is the gateway's: the ordinary module rule then applies to the child.
		{name: "own child's unregistered module", caller: "gw-1", device: "leaf-1", module: "nope", wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := &oapi.GetTokenParams{Device: ptr(tt.device)}
			if tt.module != "" {
				params.Module = ptr(tt.module)
			}
			resp := f.getToken(f.as(tt.caller), params)
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				if ct := resp.HTTPResponse.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("Content-Type: got %q, want application/problem+json", ct)
				}
				if tt.sameRefusal {
					notChild.check(t, resp.Body)
				}
				return
			}
			key := f.key[tt.wantKey]
			if tt.wantKey == "module" {
				key = f.moduleKey
			}
			p := mustVerify(t, resp.JSON200.Token, key, signer.KeyBase64, f.clock.Now())
			if p.Resource != tt.wantResource || resp.JSON200.Resource != tt.wantResource {
				t.Errorf("resource: got %q / %q, want %q", p.Resource, resp.JSON200.Resource, tt.wantResource)
			}
		})
	}
	if notChild.detail != "the caller may not have tokens for that device" {
		t.Errorf("not-your-child detail: got %q", notChild.detail)
	}

	// Audit: both IDs on child tokens and on refusals; never a token.
	var issued, refusedGhost bool
	for _, r := range f.auditRecords() {
		switch {
		case r.Device == "leaf-1" && r.Gateway == "gw-1" && r.Actor == "gw-1" && r.Outcome == "issued" && r.ExpiresAt != nil:
			issued = true
		case r.Device == "ghost" && r.Gateway == "gw-1" && r.Actor == "gw-1" && r.Outcome == "forbidden":
			refusedGhost = true
		case r.Actor == "plain" && r.Gateway != "":
			t.Errorf("a non-gateway's refused request names it as gateway: %+v", r)
		case r.Device == "gw-1" && r.Outcome == "issued" && r.Gateway != "":
			t.Errorf("gw-1's own token audited as a child token: %+v", r)
		}
	}
	if !issued || !refusedGhost {
		t.Errorf("audit: child token recorded %v, refusal recorded %v; want both:\n%s", issued, refusedGhost, f.audit.String())
	}
	if strings.Contains(f.audit.String(), "SharedAccessSignature") {
		t.Error("an audit record holds a token")
	}
	resp, body := f.rawRequest(http.MethodGet, "/metrics", "", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	for _, id := range []string{"leaf-1", "ghost", "gw-1"} {
		if strings.Contains(string(body), `"`+id+`"`) {
			t.Errorf("/metrics has device ID %q as a label value", id)
		}
	}
}

// TestGatewayRelationChangesTakeEffect: moving, disabling and un-gatewaying act on the
// very next token request (nothing is cached), and the registry's 409s hold.
func TestGatewayRelationChangesTakeEffect(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	ctx := t.Context()
	get := func(caller, device string) int {
		return f.getToken(f.as(caller), &oapi.GetTokenParams{Device: ptr(device)}).StatusCode()
	}
	patch := func(id string, p oapi.DevicePatch) *oapi.UpdateDeviceResponse {
		resp, err := f.admin.UpdateDeviceWithResponse(ctx, id, p)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := patch("gw-2", oapi.DevicePatch{Gateway: ptr(false)}); r.StatusCode() != http.StatusConflict || !strings.Contains(string(r.Body), "leaf-g2") {
		t.Errorf("un-gateway gw-2 with a child: got %d %s, want 409 naming leaf-g2", r.StatusCode(), r.Body)
	}
	if r, err := f.admin.DeleteDeviceWithResponse(ctx, "gw-2"); err != nil || r.StatusCode() != http.StatusConflict {
		t.Fatalf("delete gw-2 with a child: got %v %v, want 409", r.StatusCode(), err)
	}
	if r := patch("leaf-1", oapi.DevicePatch{Parent: ptr("plain")}); r.StatusCode() != http.StatusBadRequest || !strings.Contains(string(r.Body), "parent") {
		t.Errorf("move under a non-gateway: got %d %s, want 400 naming parent", r.StatusCode(), r.Body)
	}
	if got := get("gw-1", "leaf-g2"); got != 403 {
		t.Fatalf("before the move: got %d, want 403", got)
	}
	if r := patch("leaf-g2", oapi.DevicePatch{Parent: ptr("gw-1")}); r.JSON200 == nil || deref(r.JSON200.Parent) != "gw-1" {
		t.Fatalf("move leaf-g2 to gw-1: got %d %s", r.StatusCode(), r.Body)
	}
	if got, old := get("gw-1", "leaf-g2"), get("gw-2", "leaf-g2"); got != 200 || old != 403 {
		t.Errorf("after the move: new gateway %d, old gateway %d; want 200, 403", got, old)
	}
	if r, err := f.admin.DeleteDeviceWithResponse(ctx, "gw-2"); err != nil || r.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete emptied gw-2: got %v %v, want 204", r.StatusCode(), err)
	}
	patch("leaf-1", oapi.DevicePatch{Disabled: ptr(true)})
	if got := get("gw-1", "leaf-1"); got != 403 {
		t.Errorf("disabled child: got %d, want 403", got)
	}
	patch("leaf-1", oapi.DevicePatch{Disabled: ptr(false), Parent: ptr("")})
	if got := get("gw-1", "leaf-1"); got != 403 {
		t.Errorf("child whose parent was removed: got %d, want 403", got)
	}

	// The children listing, a page at a time.
	var children []string
	cursor := ""
	for {
		resp, err := f.admin.ListDevicesWithResponse(ctx, &oapi.ListDevicesParams{Parent: ptr("gw-1"), Limit: ptr(2), Cursor: ptrIf(cursor)})
		if err != nil || resp.JSON200 == nil {
			t.Fatalf("list children: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		for _, d := range resp.JSON200.Items {
			children = append(children, d.DeviceId)
		}
		if resp.JSON200.Next == nil {
			break
		}
		cursor = *resp.JSON200.Next
	}
	if want := []string{"leaf-2", "leaf-g2", "leaf-off"}; !slices.Equal(children, want) {
		t.Errorf("GET /devices?parent=gw-1: got %v, want %v", children, want)
	}
}

func ptrIf(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// TestGatewayIDReuseInheritsNothing: the gateway checks read, then write, so a child
// created or moved while its gateway is deleted can be left naming the gone gateway
// (registry/gateway.go). The store is put in that state directly here (the race's
// outcome, without its timing). A device later created under the old gateway's ID is
// another identity and must not obtain the orphan's tokens, by GET /token or by batch;
// the child moved under it by an operator is its child again.
func TestGatewayIDReuseInheritsNothing(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	ctx := t.Context()
	if err := f.store.DeleteDevice(ctx, "gw-2"); err != nil { // leaf-g2 still names it
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	c := f.mustDevice(oapi.DeviceCreate{DeviceId: "gw-2", Hub: "main", Gateway: ptr(true), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	f.secret["gw-2"] = *c.Auth.Secret
	if got := f.getToken(f.as("gw-2"), &oapi.GetTokenParams{Device: ptr("leaf-g2")}).StatusCode(); got != http.StatusForbidden {
		t.Errorf("GET /token?device=leaf-g2 by the new gw-2: got %d, want 403", got)
	}
	batch, err := f.anon.GetTokenBatchWithResponse(ctx, nil, oapi.TokenBatchRequest{Devices: []string{"leaf-g2"}}, bearer(f.as("gw-2")))
	if err != nil {
		t.Fatal(err)
	}
	if batch.JSON200 == nil || len(batch.JSON200.Results) != 1 || batch.JSON200.Results[0].Error == nil || batch.JSON200.Results[0].Error.Status != http.StatusForbidden {
		t.Errorf("batch [leaf-g2] by the new gw-2: got %d, want one 403 entry", batch.StatusCode())
	}
	// An operator's move names the gateway as it is now.
	if r, err := f.admin.UpdateDeviceWithResponse(ctx, "leaf-g2", oapi.DevicePatch{Parent: ptr("gw-2")}); err != nil || r.StatusCode() != http.StatusOK {
		t.Fatalf("move leaf-g2 under the new gw-2: %v %d", err, r.StatusCode())
	}
	if got := f.getToken(f.as("gw-2"), &oapi.GetTokenParams{Device: ptr("leaf-g2")}).StatusCode(); got != http.StatusOK {
		t.Errorf("after the move: got %d, want 200", got)
	}
}

func TestGatewayDeviceFieldsRejected(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: noDeviceLimits})
	tests := []struct {
		name string
		d    oapi.DeviceCreate
	}{
		{"parent missing", oapi.DeviceCreate{DeviceId: "x1", Hub: "main", Parent: ptr("ghost")}},
		{"parent not a gateway", oapi.DeviceCreate{DeviceId: "x2", Hub: "main", Parent: ptr("plain")}},
		{"parent on another hub", oapi.DeviceCreate{DeviceId: "x3", Hub: "main", Parent: ptr("gw-o")}},
		{"own parent", oapi.DeviceCreate{DeviceId: "x4", Hub: "main", Parent: ptr("x4")}},
		{"gateway with a parent", oapi.DeviceCreate{DeviceId: "x5", Hub: "main", Gateway: ptr(true), Parent: ptr("gw-1")}},
		{"parent not an ID", oapi.DeviceCreate{DeviceId: "x6", Hub: "main", Parent: ptr("a/b")}},
		{"parent empty", oapi.DeviceCreate{DeviceId: "x7", Hub: "main", Parent: ptr("")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.Auth = oapi.CredentialCreate{Type: oapi.Hs256}
			resp, err := f.admin.CreateDeviceWithResponse(t.Context(), tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != http.StatusBadRequest || resp.HTTPResponse.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(resp.Body), "parent") {
				t.Errorf("got %d %s, want a 400 problem naming parent", resp.StatusCode(), resp.Body)
			}
		})
	}
}

// TestGatewayChildRateLimits: a child's token takes from the gateway's bucket (when
// it authenticates) and from the child's, after the child is known to be its own.
func TestGatewayChildRateLimits(t *testing.T) {
	f := mustGatewayFixture(t, envOptions{config: func(c *app.Config) {
		c.Limits = limits.Config{DeviceRate: 0.2, DeviceBurst: 2}
	}})
	get := func(caller string, device *string) int {
		return f.getToken(f.as(caller), &oapi.GetTokenParams{Device: device}).StatusCode()
	}
	steps := []struct {
		name          string
		caller        string
		device        *string
		want          int
		gateway, leaf int // tokens left afterwards, for the reader
	}{
		{"gw-1 for leaf-1", "gw-1", ptr("leaf-1"), 200, 1, 1},
		{"leaf-1 for itself", "leaf-1", nil, 200, 1, 0},
		{"gw-1 for leaf-1, whose bucket is empty", "gw-1", ptr("leaf-1"), 429, 0, 0},
		{"gw-1 again: its own bucket is empty", "gw-1", ptr("leaf-2"), 429, 0, 0},
		{"a non-child never drains leaf-2's bucket", "gw-2", ptr("leaf-2"), 403, 0, 0},
		{"(gw-2 again)", "gw-2", ptr("leaf-2"), 403, 0, 0},
		{"gw-2 out of tokens", "gw-2", ptr("leaf-2"), 429, 0, 0},
		{"leaf-2 still has its own", "leaf-2", nil, 200, 0, 0},
	}
	for _, st := range steps {
		if got := get(st.caller, st.device); got != st.want {
			t.Errorf("%s: got %d, want %d", st.name, got, st.want)
		}
	}
}

// failingStore makes GetDevice of one ID fail as an unreachable backend does, once
// armed: no real store fails for one record on demand.
type failingStore struct {
	store.Store
	id    string
	armed atomic.Bool
}

func (s *failingStore) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	if s.armed.Load() && id == s.id {
		return domain.Device{}, fmt.Errorf("get device: backend unreachable (test): %w", store.ErrUnavailable)
	}
	return s.Store.GetDevice(ctx, id)
}

// TestGatewayRelationSurvivesRestart: the relation written through the API is there
// after the embedded store is closed and the service started again on the same file.
func TestGatewayRelationSurvivesRestart(t *testing.T) {
	dataDir := t.TempDir()
	withData := func(c *app.Config) { noDeviceLimits(c); c.DataDir = dataDir }
	var f *gwFixture
	// Each service is closed (its embedded store with it) when its subtest ends.
	t.Run("first run", func(t *testing.T) {
		f = mustGatewayFixture(t, envOptions{config: withData})
		if resp := f.getToken(f.as("gw-1"), &oapi.GetTokenParams{Device: ptr("leaf-1")}); resp.StatusCode() != 200 {
			t.Fatalf("before restart: got %d %s", resp.StatusCode(), resp.Body)
		}
	})
	if f == nil {
		t.FailNow()
	}
	t.Run("after restart", func(t *testing.T) {
		e2 := mustEnvWith(t, envOptions{config: withData})
		e2.jti.Store(1 << 20) // the first run's jti values are remembered across the restart
		f2 := &gwFixture{env: e2, secret: f.secret, key: f.key}
		resp := f2.getToken(f2.as("gw-1"), &oapi.GetTokenParams{Device: ptr("leaf-1")})
		if resp.JSON200 == nil {
			t.Fatalf("after restart: got %d %s, want 200", resp.StatusCode(), resp.Body)
		}
		mustVerify(t, resp.JSON200.Token, f.key["leaf-1"], signer.KeyBase64, f2.clock.Now())
		if got := f2.getToken(f2.as("gw-1"), &oapi.GetTokenParams{Device: ptr("leaf-g2")}).StatusCode(); got != 403 {
			t.Errorf("another gateway's child after restart: got %d, want 403", got)
		}
		d, err := e2.admin.GetDeviceWithResponse(t.Context(), "gw-1")
		if err != nil || d.JSON200 == nil || !deref(d.JSON200.Gateway) {
			t.Errorf("gw-1 after restart: %v %s, want gateway true", err, d.Body)
		}
		if r, err := e2.admin.DeleteDeviceWithResponse(t.Context(), "gw-1"); err != nil || r.StatusCode() != http.StatusConflict {
			t.Errorf("delete gw-1 after restart: got %v %v, want 409 (its children are still there)", r.StatusCode(), err)
		}
	})
}
