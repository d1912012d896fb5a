package jwtbroker_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

// FuzzNormalizeAndMint feeds arbitrary hub settings (as the API hands them over: field
// name and JSON text) through Normalize: it either refuses them with domain.ErrInvalid
// or accepts them, and then every mint yields a JWT whose payload is a JSON object with
// the device as sub and the registered claims the service's own.
func FuzzNormalizeAndMint(f *testing.F) {
	f.Add(`{"acl":{"pub":["devices/{deviceId}/#"]}}`, "{deviceId}", "devices/{deviceId}/up", `["c/{deviceId}/#"]`, `"5"`, `"CUSTOM-JWT"`, "8883", "d-1")
	f.Add(`{"{deviceId}":"x","n":1e400}`, "c-{deviceId}", "t", `[]`, `"3.1.1"`, `""`, "0", "exp")
	f.Add(`null`, "{deviceID}", "a/+/b", `["#/a"]`, `5`, `null`, `"1"`, "sub")
	iss := testissuer.Serve(f)
	f.Fuzz(func(t *testing.T, claims, clientID, topic, subs, version, method, port, deviceID string) {
		h := domain.Hub{Name: "b", Kind: jwtbroker.Name, Hostname: "broker.example", Settings: map[string]string{
			"claims": claims, "clientIdTemplate": jsonString(clientID), "topicTemplate": jsonString(topic),
			"subscribeTemplates": subs, "mqttVersion": version, "authMethod": method, "port": port,
		}}
		if err := (jwtbroker.Kind{}).Normalize(&h); err != nil {
			if !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("Normalize: got %v, want nil or an error wrapping domain.ErrInvalid", err)
			}
			return
		}
		if !domain.ValidID(deviceID) {
			return
		}
		now := time.Unix(1_800_000_000, 0)
		m, err := (jwtbroker.Kind{}).Mint(t.Context(), target.Signers{Issuer: iss}, h,
			target.Request{Device: domain.Device{ID: deviceID}, TTL: time.Hour, Transport: signer.TCP, Now: now})
		if err != nil {
			t.Fatalf("Mint after an accepted Normalize: %v", err)
		}
		payload, err := jwt.NewParser().DecodeSegment(strings.Split(m.Token.Value, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		var c map[string]any
		if err := json.Unmarshal(payload, &c); err != nil {
			t.Fatalf("payload is not a JSON object: %v", err)
		}
		if c["sub"] != deviceID || c["iss"] != iss.Issuer() || c["exp"] != float64(now.Add(time.Hour).Unix()) {
			t.Fatalf("registered claims: got sub %v, iss %v, exp %v", c["sub"], c["iss"], c["exp"])
		}
		if p := m.Profiles.MQTT; !strings.Contains(p.ClientID, deviceID) {
			t.Fatalf("client ID %q does not name device %q", p.ClientID, deviceID)
		}
	})
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
