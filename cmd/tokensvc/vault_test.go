package main

import (
	"net/http"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// mustPolicyToken returns a renewable token that holds exactly the README's
// least-privilege policy, so these tests prove the policy is enough.
func mustPolicyToken(t *testing.T, srv *vaulttest.Server) string {
	t.Helper()
	return mustPolicyTokenTTL(t, srv, "1h")
}

// mustPolicyTokenTTL is mustPolicyToken with the token's TTL chosen, e.g. short enough
// that the service must renew it while a test runs.
func mustPolicyTokenTTL(t *testing.T, srv *vaulttest.Server, ttl string) string {
	t.Helper()
	return srv.PolicyToken(t, "../../deploy/vault/tokensvc.hcl", ttl)
}

// vaultEnv is the environment of a tokensvc on srv's Vault with the policy token and
// admin as the admin token; callers add their own settings.
func vaultEnv(t *testing.T, srv *vaulttest.Server, admin string) map[string]string {
	t.Helper()
	return map[string]string{
		"TOKENSVC_STORE":       "vault",
		"VAULT_ADDR":           srv.Addr,
		"VAULT_TOKEN":          mustPolicyToken(t, srv),
		"TOKENSVC_ADMIN_TOKEN": admin,
	}
}

// TestVaultOutage runs tokensvc on a real Vault, freezes Vault (SIGSTOP: requests hang
// rather than fail, the case a naive client stalls on) and checks the DESIGN §6 bar:
// devices with cached keys keep getting tokens, others get a fast 503 with Retry-After,
// and service resumes on its own once Vault answers again.
func TestVaultOutage(t *testing.T) {
	srv := vaulttest.Start(t)
	const admin = "vault-e2e-admin-token-0123"
	env := vaultEnv(t, srv, admin)
	env["TOKENSVC_AUDIENCE"] = "tokensvc"
	in := mustStart(t, env)
	ctx := t.Context()
	c := client(t, in.url, admin)
	apptest.PostHub(t, c, mainHub)
	type device struct{ id, secret, key string }
	var warm, cold []device
	for i := range 20 {
		id := "dev-" + strconv.Itoa(i)
		dev := apptest.PostDevice(t, c, hs256(id, "main"))
		d := device{id, *dev.Auth.Secret, *dev.PrimaryKey}
		if i < 10 {
			warm = append(warm, d)
		} else {
			cold = append(cold, d)
		}
	}
	jti := 0
	fetch := func(d device) (int, time.Duration, *http.Response) {
		jti++
		a := assertionFor(t, d.id, d.secret, "j"+strconv.Itoa(jti))
		start := time.Now()
		resp, err := client(t, in.url, a).GetTokenWithResponse(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 != nil {
			key, _ := signer.DecodeKey(d.key, signer.KeyBase64)
			if _, err := signer.Verify(resp.JSON200.Token, key, time.Now()); err != nil {
				t.Fatalf("token for %s does not verify: %v", d.id, err)
			}
		}
		return resp.StatusCode(), time.Since(start), resp.HTTPResponse
	}
	for _, d := range warm {
		if code, _, _ := fetch(d); code != 200 {
			t.Fatalf("warm-up %s: got %d", d.id, code)
		}
	}

	srv.Pause()
	var coldLatencies []time.Duration
	for round := range 3 {
		for _, d := range warm {
			if code, _, _ := fetch(d); code != 200 {
				t.Errorf("round %d, cached %s during the outage: got %d, want 200", round, d.id, code)
			}
		}
		for _, d := range cold {
			code, took, resp := fetch(d)
			if code != 503 || resp.Header.Get("Retry-After") == "" {
				t.Errorf("round %d, uncached %s during the outage: got %d (Retry-After %q), want 503 with Retry-After", round, d.id, code, resp.Header.Get("Retry-After"))
			}
			coldLatencies = append(coldLatencies, took)
		}
	}
	sort.Slice(coldLatencies, func(i, j int) bool { return coldLatencies[i] < coldLatencies[j] })
	worst := coldLatencies[len(coldLatencies)-1]
	t.Logf("503 latency for uncached devices while Vault hangs: median %v, max %v (%d requests)", coldLatencies[len(coldLatencies)/2], worst, len(coldLatencies))
	// The design figure is 300 ms, measured above; asserted is only what tells one
	// bounded attempt from a retry chain or a wait for the hung Vault (see ceil503), so
	// a loaded CI machine does not fail on scheduling noise.
	if worst > ceil503 {
		t.Errorf("slowest 503: got %v, want at most %v", worst, ceil503)
	}

	// Readiness stays green but says why it is degraded: every replica leaving its
	// Service would strand the devices whose keys are cached.
	if got := readiness(t, in.url); got != "degraded" {
		t.Errorf("readyz during the outage: got %q, want degraded", got)
	}

	srv.Resume()
	resumed := time.Now()
	for {
		code, _, _ := fetch(cold[0])
		if code == 200 {
			break
		}
		if time.Since(resumed) > 30*time.Second {
			t.Fatalf("30 s after Vault resumed: still %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("service resumed %v after Vault did", time.Since(resumed).Round(time.Millisecond))
	for _, d := range cold[1:] {
		if code, _, _ := fetch(d); code != 200 {
			t.Errorf("after recovery %s: got %d, want 200", d.id, code)
		}
	}
	if got := readiness(t, in.url); got != "ok" {
		t.Errorf("readyz after recovery: got %q, want ok", got)
	}
}

// TestVaultTransitHubs provisions Transit hubs through the API and checks that the
// tokens the service mints — signed inside Vault — verify with the keys the operator
// was given, for device keys, module keys and a hub policy key.
func TestVaultTransitHubs(t *testing.T) {
	srv := vaulttest.Start(t)
	const admin = "vault-e2e-admin-token-0123"
	in := mustStart(t, vaultEnv(t, srv, admin))
	ctx := t.Context()
	c := client(t, in.url, admin)
	const policyKey = "XxZwqYIbxymF12RefbsHeAtOtNn7nZeUZKUrK4A6+wM="
	for _, h := range []oapi.HubCreate{
		{Name: "keys", Kind: oapi.Iothub, Hostname: "contoso-hub.azure-devices.net", Transit: ptrTo(true)},
		{Name: "policy", Kind: oapi.Iothub, Hostname: "contoso-hub.azure-devices.net", Transit: ptrTo(true), Mode: ptrTo(oapi.Policy), PolicyName: ptrTo("device"), PolicyKey: ptrTo(policyKey)},
	} {
		resp, err := c.CreateHubWithResponse(ctx, h)
		if err != nil || resp.JSON201 == nil || resp.JSON201.Transit == nil || !*resp.JSON201.Transit {
			t.Fatalf("create transit hub %s: %v %s", h.Name, err, resp.Body)
		}
	}
	tests := []struct {
		name, hub, device string
		module            *string
		wantSkn           string
	}{
		{"device key in Transit", "keys", "t-dev", nil, ""},
		{"module key in Transit", "keys", "t-gw", ptrTo("filter"), ""},
		{"hub policy key in Transit", "policy", "t-pol", nil, "device"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := oapi.DeviceCreate{DeviceId: tt.device, Hub: tt.hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}}
			if tt.module != nil {
				body.Modules = &[]oapi.ModuleCreate{{ModuleId: *tt.module}}
			}
			created := apptest.PostDevice(t, c, body)
			key := policyKey
			switch {
			case tt.module != nil:
				key = created.Modules[0].PrimaryKey
			case tt.wantSkn == "":
				key = *created.PrimaryKey
			}
			a := assertionFor(t, tt.device, *created.Auth.Secret, "transit-"+strconv.Itoa(i))
			resp, err := client(t, in.url, a).GetTokenWithResponse(ctx, &oapi.GetTokenParams{Module: tt.module})
			if err != nil || resp.JSON200 == nil {
				t.Fatalf("GET /token: %v %d %s", err, resp.StatusCode(), resp.Body)
			}
			k, _ := signer.DecodeKey(key, signer.KeyBase64)
			p, err := signer.Verify(resp.JSON200.Token, k, time.Now())
			if err != nil {
				t.Fatalf("Transit-signed token does not verify with the operator's key: %v", err)
			}
			if p.PolicyName != tt.wantSkn {
				t.Errorf("skn: got %q, want %q", p.PolicyName, tt.wantSkn)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// readiness returns /readyz's status field, failing on anything but a 200.
func readiness(t *testing.T, url string) string {
	t.Helper()
	resp, err := client(t, url, "").GetReadyzWithResponse(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("readyz: got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	return resp.JSON200.Status
}
