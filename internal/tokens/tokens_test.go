package tokens_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

var now = time.Unix(1767222000, 0).UTC()

// hubs is a map-backed HubGetter: the issuer only reads hubs.
type hubs map[string]domain.Hub

func (h hubs) GetHub(_ context.Context, name string) (domain.Hub, error) {
	hub, ok := h[name]
	if !ok {
		return domain.Hub{}, store.ErrNotFound
	}
	return hub, nil
}

const (
	deviceKey = "IpHYzcMQQR5+wnN4pmHJNRh8B+TVY26bw8QAsnJEuM0="
	moduleKey = "aW0tYS1tb2R1bGUta2V5LW9mLTMyLWJ5dGVzLWxvbmchIQ=="
	groupKey  = "Z3JvdXAta2V5LWdyb3VwLWtleS1ncm91cC1rZXktMzIhIQ=="
	ehKey     = "xTOK69yMO2eDWPPYk1p16ESojJv1ugFiyNvS9OLwvYM="
)

var testHubs = hubs{
	"iothub": {Name: "iothub", Kind: domain.KindIoTHub, Hostname: "contoso.azure-devices.net", Mode: domain.SignDeviceKey, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
	"policy": {Name: "policy", Kind: domain.KindIoTHub, Hostname: "contoso.azure-devices.net", Mode: domain.SignPolicy, PolicyName: "device", PolicyKey: deviceKey, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
	"edge":   {Name: "edge", Kind: domain.KindIoTHub, Hostname: "contoso.azure-devices.net", Mode: domain.SignDeviceKey, GatewayHostName: "edge.factory.local", DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
	"events": {Name: "events", Kind: domain.KindEventHubs, Hostname: "contoso-ns.servicebus.windows.net", EntityPath: "telemetry", Mode: domain.SignPolicy, PolicyName: "SendOnly", PolicyKey: ehKey, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
	"dps":    {Name: "dps", Kind: domain.KindDPS, Hostname: "global.azure-devices-provisioning.net", IDScope: "0ne00000001", Mode: domain.SignDeviceKey, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
	"dpsgrp": {Name: "dpsgrp", Kind: domain.KindDPS, Hostname: "global.azure-devices-provisioning.net", IDScope: "0ne00000001", Mode: domain.SignGroupKey, PolicyKey: groupKey, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
}

func mustKey(tb testing.TB, text string, enc signer.KeyEncoding) []byte {
	tb.Helper()
	k, err := signer.DecodeKey(text, enc)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// kind is one token kind the issuer mints, with the key a broker would check the token
// with and the resource it must be scoped to.
type kind struct {
	name     string
	hub      string
	module   string
	tr       signer.Transport
	key      []byte
	resource string
}

func allKinds(tb testing.TB) []kind {
	derived, err := signer.DeriveDeviceKey(groupKey, "sensor-1")
	if err != nil {
		tb.Fatal(err)
	}
	return []kind{
		{"iothub-device-mqtt", "iothub", "", signer.TCP, mustKey(tb, deviceKey, signer.KeyBase64), "contoso.azure-devices.net/devices/sensor-1"},
		{"iothub-device-websocket", "iothub", "", signer.WebSocket, mustKey(tb, deviceKey, signer.KeyBase64), "contoso.azure-devices.net/devices/sensor-1"},
		{"iothub-module", "iothub", "filter", signer.TCP, mustKey(tb, moduleKey, signer.KeyBase64), "contoso.azure-devices.net/devices/sensor-1/modules/filter"},
		{"iothub-policy", "policy", "", signer.TCP, mustKey(tb, deviceKey, signer.KeyBase64), "contoso.azure-devices.net/devices/sensor-1"},
		{"iothub-edge-gateway", "edge", "", signer.TCP, mustKey(tb, deviceKey, signer.KeyBase64), "contoso.azure-devices.net/devices/sensor-1"},
		{"eventhubs-publisher", "events", "", signer.TCP, mustKey(tb, ehKey, signer.KeyUTF8), "https://contoso-ns.servicebus.windows.net/telemetry/publishers/sensor-1"},
		{"dps-registration", "dps", "", signer.TCP, mustKey(tb, deviceKey, signer.KeyBase64), "0ne00000001/registrations/sensor-1"},
		{"dps-group-derived", "dpsgrp", "", signer.TCP, mustKey(tb, derived, signer.KeyBase64), "0ne00000001/registrations/sensor-1"},
	}
}

func device(hub string) domain.Device {
	return domain.Device{
		ID: "sensor-1", Hub: hub, PrimaryKey: deviceKey, SecondaryKey: deviceKey,
		Modules: []domain.Module{{ID: "filter", PrimaryKey: moduleKey, SecondaryKey: moduleKey}},
	}
}

// TestIssueEveryKind checks each kind's token verifies with the key its broker holds,
// for the resource it names, with the hub's default lifetime.
func TestIssueEveryKind(t *testing.T) {
	iss := tokens.NewIssuer(testHubs, kinds.All(), signer.New(func() time.Time { return now }), nil, nil)
	for _, k := range allKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			got, err := iss.Issue(t.Context(), device(k.hub), tokens.Request{ModuleID: k.module, Transport: k.tr})
			if err != nil {
				t.Fatal(err)
			}
			p, err := signer.Verify(got.Token.Value, k.key, now)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if p.Resource != k.resource {
				t.Errorf("resource %q, want %q", p.Resource, k.resource)
			}
			if d := got.Token.ExpiresAt.Sub(now); d != time.Hour {
				t.Errorf("lifetime %v, want the hub default 1h", d)
			}
			if got.Profiles.MQTT == nil && got.Profiles.AMQP == nil && got.Profiles.HTTPS == nil {
				t.Error("no connection profile")
			}
		})
	}
}

// BenchmarkIssue is minting per token kind as GET /token does it after authentication:
// hub lookup, key decoding, SAS signing and the connection profiles.
func BenchmarkIssue(b *testing.B) {
	iss := tokens.NewIssuer(testHubs, kinds.All(), signer.New(func() time.Time { return now }), nil, nil)
	for _, k := range allKinds(b) {
		b.Run(k.name, func(b *testing.B) {
			d := device(k.hub)
			r := tokens.Request{ModuleID: k.module, Transport: k.tr}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := iss.Issue(ctx, d, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestIssueRefusals: what a device asks for that it may not have is ErrForbidden; a hub
// of a kind this build does not serve is the service's fault, never reported to the
// device as its own invalid request.
func TestIssueRefusals(t *testing.T) {
	hs := hubs{"mqtt": {Name: "mqtt", Kind: "mqtt", Hostname: "broker.example", DefaultTTL: time.Hour, MaxTTL: time.Hour}}
	for name, h := range testHubs {
		hs[name] = h
	}
	iss := tokens.NewIssuer(hs, kinds.All(), signer.New(time.Now), nil, nil)
	dev := func(hub string) domain.Device {
		return domain.Device{ID: "d1", Hub: hub, PrimaryKey: deviceKey, Modules: []domain.Module{{ID: "m1", PrimaryKey: moduleKey}}}
	}
	tests := []struct {
		name      string
		hub       string
		module    string
		wantErr   error
		notPublic bool
	}{
		{"unregistered module", "iothub", "m2", tokens.ErrForbidden, false},
		{"module on event hubs", "events", "m1", tokens.ErrForbidden, false},
		{"module on dps", "dps", "m1", tokens.ErrForbidden, false},
		{"unknown hub", "nope", "", store.ErrNotFound, false},
		{"kind this build does not serve", "mqtt", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := iss.Issue(t.Context(), dev(tt.hub), tokens.Request{ModuleID: tt.module})
			if err == nil {
				t.Fatal("got a token, want a refusal")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if _, public := errors.AsType[*domain.PublicError](err); tt.notPublic && (public || errors.Is(err, domain.ErrInvalid)) {
				t.Fatalf("got %v, a client error; want an internal one", err)
			}
		})
	}
}
