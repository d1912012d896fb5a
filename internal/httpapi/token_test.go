package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
)

const (
	hubHost   = "contoso-hub.azure-devices.net"
	policyKey = "XxZwqYIbxymF12RefbsHeAtOtNn7nZeUZKUrK4A6+wM="
	groupKey  = "zyGEx480bfMOe95dkY0z8IFpfNBbalgAiYqfyZxUdZk="
	ehKey     = "xTOK69yMO2eDWPPYk1p16ESojJv1ugFiyNvS9OLwvYM="
)

// mustVerify checks tok the way the target service would, with the key it would hold.
func mustVerify(t *testing.T, tok, keyText string, enc signer.KeyEncoding, at time.Time) signer.Parsed {
	t.Helper()
	key, err := signer.DecodeKey(keyText, enc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := signer.Verify(tok, key, at)
	if err != nil {
		t.Fatalf("token does not verify with the expected key: %v", err)
	}
	return p
}

func TestGetTokenIoTHubDevice(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	created := e.mustDevice(oapi.DeviceCreate{DeviceId: "Dev.With:Colons@site=7$x", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	if created.PrimaryKey == nil || created.SecondaryKey == nil || created.Auth.Secret == nil {
		t.Fatalf("201 must return generated keys and secret once: got %+v", created)
	}

	// A clock between two seconds: se is whole seconds, and the times reported must agree.
	e.clock.Advance(700 * time.Millisecond)
	resp := e.getToken(e.hs256("Dev.With:Colons@site=7$x", *created.Auth.Secret), nil)
	if resp.JSON200 == nil {
		t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	if got := resp.HTTPResponse.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", got)
	}
	tr := resp.JSON200
	now := e.clock.Now().Truncate(time.Second)
	p := mustVerify(t, tr.Token, *created.PrimaryKey, signer.KeyBase64, now)
	if want := hubHost + "/devices/Dev.With:Colons@site=7$x"; p.Resource != want || tr.Resource != want {
		t.Errorf("resource: got %q / %q, want %q", p.Resource, tr.Resource, want)
	}
	if p.PolicyName != "" {
		t.Errorf("skn: got %q, want none for a device key", p.PolicyName)
	}
	if tr.ExpiresIn != 3600 || !tr.ExpiresAt.Equal(now.Add(time.Hour)) || p.Expiry != now.Add(time.Hour).Unix() {
		t.Errorf("expiry: got expiresIn %d expiresAt %v se %d, want 3600 s from %v", tr.ExpiresIn, tr.ExpiresAt, p.Expiry, now)
	}
	if want := now.Add(48 * time.Minute); !tr.RefreshAfter.Equal(want) {
		t.Errorf("refreshAfter: got %v, want %v (80 %%)", tr.RefreshAfter, want)
	}
	if !tr.ServerTime.Equal(now) {
		t.Errorf("serverTime: got %v, want %v", tr.ServerTime, now)
	}
	m := tr.Mqtt
	if m == nil || m.ClientId != "Dev.With:Colons@site=7$x" || m.Username != hubHost+"/Dev.With:Colons@site=7$x/?api-version=2021-04-12" || m.Password != tr.Token || m.Port != 8883 || m.Host != hubHost {
		t.Errorf("mqtt: got %+v", m)
	}
	a := tr.Amqp
	if a == nil || deref(a.Username) != "Dev.With:Colons@site=7$x@sas.contoso-hub" || a.Port != 5671 || a.SaslMechanism != oapi.PLAIN || a.Cbs.Audience != p.Resource {
		t.Errorf("amqp: got %+v", a)
	}
	if want := "HostName=" + hubHost + ";DeviceId=Dev.With:Colons@site=7$x;SharedAccessSignature=" + tr.Token; deref(tr.ConnectionString) != want {
		t.Errorf("connection string: got %q, want %q", deref(tr.ConnectionString), want)
	}
	// Tokens are written without HTML escaping so naive parsers see & and = as they are.
	if strings.Contains(string(resp.Body), `\u0026`) {
		t.Errorf("body HTML-escapes the token: %s", resp.Body)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func TestGetTokenByHubKind(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "policy-hub", Kind: oapi.Iothub, Hostname: "contoso.device.azure-devices.net", Mode: ptr(oapi.Policy), PolicyName: ptr("device"), PolicyKey: ptr(policyKey)})
	e.mustHub(oapi.HubCreate{Name: "edge", Kind: oapi.Iothub, Hostname: hubHost, GatewayHostName: ptr("edge.factory.local")})
	e.mustHub(oapi.HubCreate{Name: "eh", Kind: oapi.Eventhubs, Hostname: "contoso-ns.servicebus.windows.net", EntityPath: ptr("telemetry"), PolicyName: ptr("SendOnly"), PolicyKey: ptr(ehKey)})
	e.mustHub(oapi.HubCreate{Name: "dps-group", Kind: oapi.Dps, Hostname: "global.azure-devices-provisioning.net", IdScope: ptr("0ne00ABCDEF"), Mode: ptr(oapi.GroupKey), PolicyKey: ptr(groupKey)})

	derived, err := signer.DeriveDeviceKey(groupKey, "sensor-0003")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, hub, device string
		params            oapi.GetTokenParams
		key               string
		enc               signer.KeyEncoding
		wantResource      string
		wantSkn           string
		check             func(t *testing.T, tr *oapi.TokenResponse)
	}{
		{
			name: "policy-scoped IoT Hub on the device endpoint", hub: "policy-hub", device: "sensor-0002",
			key: policyKey, wantResource: "contoso.device.azure-devices.net/devices/sensor-0002", wantSkn: "device",
			check: func(t *testing.T, tr *oapi.TokenResponse) {
				if tr.Mqtt.Username != "contoso.device.azure-devices.net/sensor-0002/?api-version=2021-04-12" {
					t.Errorf("mqtt username: got %q", tr.Mqtt.Username)
				}
				if deref(tr.Amqp.Username) != "sensor-0002@sas.contoso" {
					t.Errorf("amqp username: got %q, want the short hub name", deref(tr.Amqp.Username))
				}
			},
		},
		{
			name: "through an IoT Edge gateway over WebSocket", hub: "edge", device: "leaf-1",
			params: oapi.GetTokenParams{Transport: ptr(oapi.GetTokenParamsTransportWs)},
			enc:    signer.KeyBase64, wantResource: hubHost + "/devices/leaf-1",
			check: func(t *testing.T, tr *oapi.TokenResponse) {
				if tr.Mqtt.Host != "edge.factory.local" || tr.Mqtt.Port != 443 || tr.Mqtt.Url != "wss://edge.factory.local:443/$iothub/websocket" {
					t.Errorf("mqtt: got host %q port %d url %q", tr.Mqtt.Host, tr.Mqtt.Port, tr.Mqtt.Url)
				}
				if tr.Mqtt.Tls == nil || tr.Mqtt.Tls.ServerName != "edge.factory.local" {
					t.Errorf("mqtt tls: got %+v, want the gateway name", tr.Mqtt.Tls)
				}
				if deref(tr.Amqp.Subprotocol) != "AMQPWSB10" || tr.Amqp.Port != 443 {
					t.Errorf("amqp ws: got %+v", tr.Amqp)
				}
				if !strings.HasSuffix(deref(tr.ConnectionString), ";GatewayHostName=edge.factory.local") {
					t.Errorf("connection string: got %q", deref(tr.ConnectionString))
				}
			},
		},
		{
			name: "Event Hubs publisher", hub: "eh", device: "truck-9",
			key: ehKey, enc: signer.KeyUTF8, wantResource: "https://contoso-ns.servicebus.windows.net/telemetry/publishers/truck-9", wantSkn: "SendOnly",
			check: func(t *testing.T, tr *oapi.TokenResponse) {
				if tr.Mqtt != nil {
					t.Errorf("mqtt: got %+v, want none for Event Hubs", tr.Mqtt)
				}
				if tr.Amqp.SaslMechanism != oapi.ANONYMOUS || tr.Amqp.Address != "/telemetry/publishers/truck-9" {
					t.Errorf("amqp: got %+v", tr.Amqp)
				}
			},
		},
		{
			name: "DPS group enrollment", hub: "dps-group", device: "sensor-0003",
			key: derived, wantResource: "0ne00ABCDEF/registrations/sensor-0003", wantSkn: "registration",
			check: func(t *testing.T, tr *oapi.TokenResponse) {
				if tr.Mqtt.Username != "0ne00ABCDEF/registrations/sensor-0003/api-version=2021-06-01" || tr.Mqtt.ClientId != "sensor-0003" {
					t.Errorf("mqtt: got %+v", tr.Mqtt)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.mustDevice(oapi.DeviceCreate{DeviceId: tt.device, Hub: tt.hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
			key := tt.key
			if key == "" {
				key = deref(c.PrimaryKey)
			} else if c.PrimaryKey != nil {
				t.Errorf("device on a %s hub got its own key", tt.hub)
			}
			resp := e.getToken(e.hs256(tt.device, *c.Auth.Secret), &tt.params)
			if resp.JSON200 == nil {
				t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
			}
			p := mustVerify(t, resp.JSON200.Token, key, tt.enc, e.clock.Now())
			if p.Resource != tt.wantResource || p.PolicyName != tt.wantSkn {
				t.Errorf("got sr %q skn %q, want %q %q", p.Resource, p.PolicyName, tt.wantResource, tt.wantSkn)
			}
			tt.check(t, resp.JSON200)
		})
	}
}

func TestGetTokenModuleAndTTL(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost, DefaultTtlSeconds: ptr(600), MaxTtlSeconds: ptr(7200)})
	gw := e.mustDevice(oapi.DeviceCreate{DeviceId: "gateway-7", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256},
		Modules: &[]oapi.ModuleCreate{{ModuleId: "filter-A"}}})
	capped := e.mustDevice(oapi.DeviceCreate{DeviceId: "capped", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, MaxTtlSeconds: ptr(300)})
	if len(gw.Modules) != 1 || gw.Modules[0].PrimaryKey == "" || gw.Modules[0].PrimaryKey == deref(gw.PrimaryKey) {
		t.Fatalf("module must get keys of its own: got %+v", gw.Modules)
	}

	resp := e.getToken(e.hs256("gateway-7", *gw.Auth.Secret), &oapi.GetTokenParams{Module: ptr("filter-A")})
	if resp.JSON200 == nil {
		t.Fatalf("module token: got %d %s", resp.StatusCode(), resp.Body)
	}
	p := mustVerify(t, resp.JSON200.Token, gw.Modules[0].PrimaryKey, signer.KeyBase64, e.clock.Now())
	if want := hubHost + "/devices/gateway-7/modules/filter-A"; p.Resource != want {
		t.Errorf("module resource: got %q, want %q", p.Resource, want)
	}
	if resp.JSON200.Mqtt.ClientId != "gateway-7/filter-A" || !strings.HasPrefix(deref(resp.JSON200.ConnectionString), "HostName="+hubHost+";DeviceId=gateway-7;ModuleId=filter-A;") {
		t.Errorf("module profile: got clientId %q, connection string %q", resp.JSON200.Mqtt.ClientId, deref(resp.JSON200.ConnectionString))
	}

	ttls := []struct {
		name   string
		device string
		secret string
		ttl    *int
		want   int
	}{
		{"hub default", "gateway-7", *gw.Auth.Secret, nil, 600},
		{"requested within cap", "gateway-7", *gw.Auth.Secret, ptr(1800), 1800},
		{"capped by hub maximum", "gateway-7", *gw.Auth.Secret, ptr(86400), 7200},
		{"capped by device maximum", "capped", *capped.Auth.Secret, ptr(3600), 300},
		{"default above device cap", "capped", *capped.Auth.Secret, nil, 300},
	}
	for _, tt := range ttls {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.getToken(e.hs256(tt.device, tt.secret), &oapi.GetTokenParams{Ttl: tt.ttl})
			if resp.JSON200 == nil {
				t.Fatalf("got %d %s", resp.StatusCode(), resp.Body)
			}
			if resp.JSON200.ExpiresIn != tt.want {
				t.Errorf("expiresIn: got %d, want %d", resp.JSON200.ExpiresIn, tt.want)
			}
		})
	}
}

func TestGetTokenPlainText(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: "mcu-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	resp := e.getToken(e.hs256("mcu-1", *c.Auth.Secret), nil, func(_ context.Context, r *http.Request) error {
		r.Header.Set("Accept", "text/plain")
		return nil
	})
	if resp.StatusCode() != 200 || !strings.HasPrefix(resp.HTTPResponse.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("got %d %q", resp.StatusCode(), resp.HTTPResponse.Header.Get("Content-Type"))
	}
	fields := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(resp.Body)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("line %q is not key=value", line)
		}
		fields[k] = v
	}
	mustVerify(t, fields["token"], *c.PrimaryKey, signer.KeyBase64, e.clock.Now())
	want := map[string]string{
		"expiresIn": "3600", "refreshIn": "2880", "mqttHost": hubHost, "mqttPort": "8883",
		"mqttClientId": "mcu-1", "mqttUsername": hubHost + "/mcu-1/?api-version=2021-04-12",
		"mqttPublish": "devices/mcu-1/messages/events/", "serverTime": "1795348800",
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("%s: got %q, want %q", k, fields[k], v)
		}
	}
}

// TestDeviceAuthorizationMatrix is every way a caller might try to get a token it should
// not: each must fail with the same 401 (or 403 for an authenticated device asking for a
// module that is not its own), and none may mint anything.
func TestDeviceAuthorizationMatrix(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	alice := e.mustDevice(oapi.DeviceCreate{DeviceId: "alice", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Modules: &[]oapi.ModuleCreate{{ModuleId: "mod-a"}}})
	bob := e.mustDevice(oapi.DeviceCreate{DeviceId: "bob", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Modules: &[]oapi.ModuleCreate{{ModuleId: "mod-b"}}})
	ecPriv, ecPub := mustECKey(t)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "ec", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Es256, PublicKey: &ecPub}})
	edPriv, edPub := mustEdKey(t)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "ed", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Eddsa, PublicKey: &edPub}})
	otherEC, _ := mustECKey(t)
	off := e.mustDevice(oapi.DeviceCreate{DeviceId: "off", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Disabled: ptr(true)})

	aliceSecret, bobSecret := []byte(*alice.Auth.Secret), []byte(*bob.Auth.Secret)
	with := func(id string, edit func(jwt.MapClaims)) jwt.MapClaims {
		c := e.claims(id)
		edit(c)
		return c
	}
	hs := func(c jwt.MapClaims, key []byte) string { return mustSign(t, jwt.SigningMethodHS256, c, key) }
	now := e.clock.Now()
	replayed := hs(e.claims("alice"), aliceSecret)

	tests := []struct {
		name       string
		assertion  string
		module     *string
		wantStatus int
	}{
		{"valid hs256", hs(e.claims("alice"), aliceSecret), nil, 200},
		{"valid es256", mustSign(t, jwt.SigningMethodES256, e.claims("ec"), ecPriv), nil, 200},
		{"valid eddsa", mustSign(t, jwt.SigningMethodEdDSA, e.claims("ed"), edPriv), nil, 200},
		{"own module", hs(e.claims("alice"), aliceSecret), ptr("mod-a"), 200},
		{"first use of a jti", replayed, nil, 200},
		{"replayed jti", replayed, nil, 401},
		{"no assertion", "", nil, 401},
		{"garbage", "not-a-jwt", nil, 401},
		{"many dots", strings.Repeat(".", 5000), nil, 401},
		{"wrong secret", hs(e.claims("alice"), bobSecret), nil, 401},
		{"other device's sub, signed with own secret", hs(e.claims("bob"), aliceSecret), nil, 401},
		{"iss differs from sub", hs(with("alice", func(c jwt.MapClaims) { c["iss"] = "bob" }), aliceSecret), nil, 401},
		{"unknown device", hs(e.claims("mallory"), aliceSecret), nil, 401},
		{"disabled device, correctly signed", hs(e.claims("off"), []byte(*off.Auth.Secret)), nil, 401},
		{"another device's module", hs(e.claims("alice"), aliceSecret), ptr("mod-b"), 403},
		{"unregistered module", hs(e.claims("alice"), aliceSecret), ptr("nope"), 403},
		{"expired", hs(with("alice", func(c jwt.MapClaims) {
			c["iat"], c["exp"] = now.Add(-4*time.Minute).Unix(), now.Add(-time.Minute).Unix()
		}), aliceSecret), nil, 401},
		{"iat in the future", hs(with("alice", func(c jwt.MapClaims) {
			c["iat"], c["exp"] = now.Add(2*time.Minute).Unix(), now.Add(4*time.Minute).Unix()
		}), aliceSecret), nil, 401},
		{"lifetime over 5 minutes", hs(with("alice", func(c jwt.MapClaims) { c["exp"] = now.Add(10 * time.Minute).Unix() }), aliceSecret), nil, 401},
		{"no exp", hs(with("alice", func(c jwt.MapClaims) { delete(c, "exp") }), aliceSecret), nil, 401},
		{"no iat", hs(with("alice", func(c jwt.MapClaims) { delete(c, "iat") }), aliceSecret), nil, 401},
		{"no jti", hs(with("alice", func(c jwt.MapClaims) { delete(c, "jti") }), aliceSecret), nil, 401},
		{"wrong aud", hs(with("alice", func(c jwt.MapClaims) { c["aud"] = "someone-else" }), aliceSecret), nil, 401},
		{"no aud", hs(with("alice", func(c jwt.MapClaims) { delete(c, "aud") }), aliceSecret), nil, 401},
		{"alg none", mustSign(t, jwt.SigningMethodNone, e.claims("alice"), jwt.UnsafeAllowNoneSignatureType), nil, 401},
		{"hs256 keyed with the es256 device's public key", hs(e.claims("ec"), []byte(ecPub)), nil, 401},
		{"es256 signed by another key", mustSign(t, jwt.SigningMethodES256, e.claims("ec"), otherEC), nil, 401},
		{"es256 device presenting eddsa", mustSign(t, jwt.SigningMethodEdDSA, e.claims("ec"), edPriv), nil, 401},
		{"hs256 device presenting es256", mustSign(t, jwt.SigningMethodES256, e.claims("alice"), ecPriv), nil, 401},
		{"oversized assertion", hs(with("alice", func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 5000) }), aliceSecret), nil, 401},
	}
	var refusals sameRefusal
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.getToken(tt.assertion, &oapi.GetTokenParams{Module: tt.module})
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if tt.wantStatus == 200 {
				return
			}
			if ct := resp.HTTPResponse.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type: got %q, want application/problem+json", ct)
			}
			if strings.Contains(string(resp.Body), "SharedAccessSignature") {
				t.Errorf("a refusal carries a token: %s", resp.Body)
			}
			if tt.wantStatus == 401 {
				refusals.check(t, resp.Body)
			}
		})
	}
}

func TestPrefersText(t *testing.T) {
	tests := []struct {
		accept string
		want   bool
	}{
		{"", false},
		{"text/plain", true},
		{"application/json", false},
		{"text/plain, application/json", false},
		{"text/plain;q=0, application/json", false},
		{"text/plain;q=0.9, application/json;q=0.5", true},
		{"application/json;q=0.1, text/plain", true},
		{"*/*", false},
		{"text/plain;q=abc", false},
		{"garbage;;;", false},
	}
	for _, tt := range tests {
		if got := httpapi.PrefersText(tt.accept); got != tt.want {
			t.Errorf("prefersText(%q): got %v, want %v", tt.accept, got, tt.want)
		}
	}
}
