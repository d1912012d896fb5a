package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestGatewayChildJWTs: on the JWT kinds too, a gateway obtains exactly its own
// children's credentials — a JWT whose sub and MQTT client ID are the child, never the
// gateway — and the one not-your-child 403 for anything else, single and batched.
func TestGatewayChildJWTs(t *testing.T) {
	e := mustEnvWith(t, envOptions{config: func(c *app.Config) {
		noDeviceLimits(c)
		c.Issuer.Issuer = "https://tokens.example.com"
	}})
	f := &gwFixture{env: e, secret: map[string]string{}, key: map[string]string{}}
	f.mustHub(oapi.HubCreate{Name: "aws", Kind: oapi.Awsiot, Hostname: "a1b2c3-ats.iot.eu-west-1.amazonaws.com",
		AuthorizerName: ptr("tokensvc"), TokenKeyName: ptr("tok")})
	f.mustHub(oapi.HubCreate{Name: "emqx", Kind: oapi.Jwtbroker, Hostname: "mqtt.example.com"})
	for _, d := range []oapi.DeviceCreate{
		{DeviceId: "gw-a", Hub: "aws", Gateway: ptr(true)},
		{DeviceId: "leaf-a", Hub: "aws", Parent: ptr("gw-a")},
		{DeviceId: "gw-j", Hub: "emqx", Gateway: ptr(true)},
		{DeviceId: "leaf-j", Hub: "emqx", Parent: ptr("gw-j")},
		{DeviceId: "plain-a", Hub: "aws"},
	} {
		d.Auth = oapi.CredentialCreate{Type: oapi.Hs256}
		f.secret[d.DeviceId] = *f.mustDevice(d).Auth.Secret
	}
	refusal := &sameRefusal{}
	tests := []struct {
		name, caller, device string
		wantStatus           int
		wantSub              string
	}{
		{"awsiot gateway, its child", "gw-a", "leaf-a", 200, "leaf-a"},
		{"awsiot gateway, itself", "gw-a", "gw-a", 200, "gw-a"},
		{"jwtbroker gateway, its child", "gw-j", "leaf-j", 200, "leaf-j"},
		{"awsiot gateway, a device without parent", "gw-a", "plain-a", 403, ""},
		{"awsiot gateway, the other gateway's child", "gw-a", "leaf-j", 403, ""},
		{"jwtbroker gateway, the other gateway", "gw-j", "gw-a", 403, ""},
		{"a child, its gateway", "leaf-a", "gw-a", 403, ""},
		{"a device that does not exist", "gw-j", "nobody", 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.getToken(f.as(tt.caller), &oapi.GetTokenParams{Device: ptr(tt.device)})
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusForbidden {
				refusal.check(t, resp.Body)
				return
			}
			checkJWTFor(t, resp.JSON200.Token, resp.JSON200.Mqtt, tt.wantSub)
		})
	}
	t.Run("batch", func(t *testing.T) {
		resp := f.batch("gw-j", nil, "leaf-j", "leaf-a", "gw-j")
		if resp.JSON200 == nil || len(resp.JSON200.Results) != 3 {
			t.Fatalf("got %d %s, want 200 with 3 results", resp.StatusCode(), resp.Body)
		}
		r := resp.JSON200.Results
		if r[0].DeviceId != "leaf-j" || r[0].Token == nil || r[0].Error != nil {
			t.Fatalf("own child: got %+v", r[0])
		}
		checkJWTFor(t, *r[0].Token, r[0].Mqtt, "leaf-j")
		for _, other := range r[1:] {
			if other.Token != nil || other.Error == nil || other.Error.Status != http.StatusForbidden {
				t.Errorf("%s: got %+v, want a 403 entry and no token", other.DeviceId, other)
			}
		}
	})
}

// checkJWTFor checks a minted JWT names sub as its subject and its MQTT client ID.
func checkJWTFor(t *testing.T, tok string, m *oapi.MqttProfile, sub string) {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatalf("token is not a JWT: %v", err)
	}
	if c.Subject != sub || m == nil || m.ClientId != sub {
		t.Fatalf("JWT sub %q, MQTT client ID %v; want both %q", c.Subject, m, sub)
	}
}
