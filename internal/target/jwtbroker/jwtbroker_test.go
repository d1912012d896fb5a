package jwtbroker_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
)

const (
	host       = "emqx.example.com"
	egHost     = "ns1.westeurope-1.ts.eventgrid.azure.net"
	egAudience = egHost + "/"
)

// hub is a jwtbroker hub for a self-hosted broker; egHub one for an Event Grid namespace.
func hub(settings map[string]string) domain.Hub {
	return domain.Hub{Name: "b1", Kind: jwtbroker.Name, Hostname: host, Settings: settings}
}

func egHub(settings map[string]string) domain.Hub {
	h := hub(settings)
	h.Hostname = egHost
	return h
}

func mustNormalize(t testing.TB, h domain.Hub) domain.Hub {
	t.Helper()
	if err := (jwtbroker.Kind{}).Normalize(&h); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	return h
}

func TestNormalizeFillsDefaults(t *testing.T) {
	h := mustNormalize(t, hub(nil))
	want := map[string]string{
		"port": "8883", "mqttVersion": `"5"`, "audience": `"` + host + `"`, "algorithm": `"ES256"`,
		"clientIdTemplate": `"{deviceId}"`, "usernameTemplate": `"{deviceId}"`,
		"topicTemplate": `"devices/{deviceId}/telemetry"`,
	}
	if h.Mode != domain.SignJWT {
		t.Errorf("mode: got %q, want jwt", h.Mode)
	}
	if len(h.Settings) != len(want) {
		t.Errorf("settings: got %v, want %v", h.Settings, want)
	}
	for k, v := range want {
		if h.Settings[k] != v {
			t.Errorf("settings[%s]: got %s, want %s", k, h.Settings[k], v)
		}
	}
	// Normalizing again changes nothing (the stored hub is read back through it).
	again := mustNormalize(t, h)
	for k, v := range h.Settings {
		if again.Settings[k] != v {
			t.Errorf("second Normalize: settings[%s] got %s, want %s", k, again.Settings[k], v)
		}
	}
}

func TestNormalizeEventGrid(t *testing.T) {
	h := mustNormalize(t, egHub(map[string]string{
		"audience": `"` + egAudience + `"`, "authMethod": `"CUSTOM-JWT"`, "mqttVersion": `"5"`, "port": "8883",
		"claims": `{ "client_attributes": {"room": "r-{deviceId}", "floor": 3} }`,
	}))
	if got, want := h.Settings["claims"], `{"client_attributes":{"room":"r-{deviceId}","floor":3}}`; got != want {
		t.Errorf("claims: got %s, want %s", got, want)
	}
	if got := h.Settings["authMethod"]; got != `"CUSTOM-JWT"` {
		t.Errorf("authMethod: got %s, want CUSTOM-JWT", got)
	}
	// Event Grid accepts RS256 only: the default there, and ES256 refused.
	if got := h.Settings["algorithm"]; got != `"RS256"` {
		t.Errorf("algorithm: got %s, want RS256", got)
	}
	es := egHub(map[string]string{"algorithm": `"ES256"`})
	if err := (jwtbroker.Kind{}).Normalize(&es); !errors.Is(err, domain.ErrInvalid) || !strings.Contains(err.Error(), "algorithm") {
		t.Errorf("ES256 for Event Grid: got %v, want a refusal naming algorithm", err)
	}
}

func TestNormalizeRefuses(t *testing.T) {
	many := make([]string, 33)
	for i := range many {
		many[i] = `"c` + strings.Repeat("x", i) + `": 1`
	}
	tests := []struct {
		name      string
		edit      func(h *domain.Hub)
		wantField string
	}{
		{"mode policy", func(h *domain.Hub) { h.Mode = domain.SignPolicy }, "mode"},
		{"policy key", func(h *domain.Hub) { h.PolicyName, h.PolicyKey = "p", "a2V5" }, "policyKey"},
		{"transit", func(h *domain.Hub) { h.Transit = true }, "transit"},
		{"gateway", func(h *domain.Hub) { h.GatewayHostName = "edge" }, "gatewayHostName"},
		{"entity path", func(h *domain.Hub) { h.EntityPath = "e" }, "entityPath"},
		{"authMethod on 3.1.1", set("mqttVersion", `"3.1.1"`, "authMethod", `"CUSTOM-JWT"`), "authMethod"},
		{"authMethod with a space", set("authMethod", `"CUSTOM JWT"`), "authMethod"},
		{"mqttVersion 4", set("mqttVersion", `"4"`), "mqttVersion"},
		{"HS256", set("algorithm", `"HS256"`), "algorithm"},
		{"port too big", set("port", "70000"), "port"},
		{"port a string", set("port", `"8883"`), "port"},
		{"shared client ID", set("clientIdTemplate", `"fleet"`), "clientIdTemplate"},
		{"placeholder typo", set("usernameTemplate", `"{deviceID}"`), "usernameTemplate"},
		{"wildcard publish topic", set("topicTemplate", `"devices/{deviceId}/#"`), "topicTemplate"},
		{"bad filter", set("subscribeTemplates", `["a/#/b"]`), "subscribeTemplates"},
		{"claims an array", set("claims", `[1]`), "claims"},
		{"claims sets sub", set("claims", `{"sub": "someone-else"}`), "claims"},
		{"claims sets exp", set("claims", `{"exp": 9999999999}`), "claims"},
		{"too many claims", set("claims", "{"+strings.Join(many, ",")+"}"), "claims"},
		{"claim number beyond float64", set("claims", `{"n": 1e400}`), "claims"},
		{"an awsiot field", set("authorizerName", `"a"`), "authorizerName"},
		{"control character", set("audience", `"a\u0007"`), "audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hub(map[string]string{})
			tt.edit(&h)
			err := (jwtbroker.Kind{}).Normalize(&h)
			if !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("got %v, want an error wrapping domain.ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("got %q, want it to name %s", err, tt.wantField)
			}
		})
	}
}

func set(kv ...string) func(h *domain.Hub) {
	return func(h *domain.Hub) {
		for i := 0; i < len(kv); i += 2 {
			h.Settings[kv[i]] = kv[i+1]
		}
	}
}

func TestPrepareDeviceRefusesKeysAndModules(t *testing.T) {
	h := mustNormalize(t, hub(nil))
	tests := []struct {
		name    string
		d       domain.Device
		wantErr error
	}{
		{"plain", domain.Device{ID: "d1"}, nil},
		{"SAS key", domain.Device{ID: "d1", PrimaryKey: domain.NewKey()}, domain.ErrInvalid},
		{"module", domain.Device{ID: "d1", Modules: []domain.Module{{ID: "m"}}}, domain.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d
			err := (jwtbroker.Kind{}).PrepareDevice(h, &d)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err == nil && (d.PrimaryKey != "" || d.SecondaryKey != "") {
				t.Error("got SAS keys generated, want none")
			}
		})
	}
}
