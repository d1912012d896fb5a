package jwtbroker

import (
	"reflect"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// TestDecodeStoredMatchesDecodeSettings: the fast decoder of stored settings reads every
// field as target.DecodeSettings does.
func TestDecodeStoredMatchesDecodeSettings(t *testing.T) {
	h := domain.Hub{Name: "b", Kind: Name, Hostname: "broker.example", Settings: map[string]string{
		"port": "1883", "mqttVersion": `"5"`, "audience": `"aud/"`, "authMethod": `"CUSTOM-JWT"`, "algorithm": `"RS256"`,
		"clientIdTemplate": `"c-{deviceId}"`, "usernameTemplate": `"u-{deviceId}"`, "topicTemplate": `"t/{deviceId}"`,
		"subscribeTemplates": `["s/{deviceId}/#","b/+"]`, "claims": `{"acl":{"pub":["t/{deviceId}"]},"n":1}`,
	}}
	if err := (Kind{}).Normalize(&h); err != nil {
		t.Fatal(err)
	}
	if got := len(h.Settings); got != 10 {
		t.Fatalf("settings: got %d fields, want all 10 set", got)
	}
	want, err := decode(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeStored(h)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	h.Settings["bogus"] = "1"
	if _, err := decodeStored(h); err == nil {
		t.Error("unknown field: got nil error, want DecodeSettings' refusal")
	}
}
