// Package storetest is the behavioural contract of store.Store, written once so the
// embedded file store and the Vault store are held to exactly the same rules.
//
// It tests only what the store.Store documentation promises; behaviour a backend
// chooses for itself (aliasing of returned records, cursor format, limits) belongs in
// that backend's own tests.
package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Run runs the contract against stores made by open. Every subtest calls open for a
// store of its own, which must be empty. Run closes each store when its subtest ends
// and fails the subtest if Close fails, so open should register only cleanup of its
// own (temporary files, Vault paths).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, open func(t *testing.T) store.Store)
	}{
		{"HubRoundTrip", testHubRoundTrip},
		{"CreateHubDuplicate", testCreateHubDuplicate},
		{"GetHubMissing", testGetHubMissing},
		{"ListHubsOrderedByName", testListHubs},
		{"DeleteHub", testDeleteHub},
		{"DeviceRoundTrip", testDeviceRoundTrip},
		{"CreateDeviceErrors", testCreateDeviceErrors},
		{"GetDeviceMissing", testGetDeviceMissing},
		{"DeviceIDsAreCaseSensitive", testDeviceIDsCaseSensitive},
		{"ListDevicesPaging", testListDevicesPaging},
		{"UpdateDevice", testUpdateDevice},
		{"GatewayRelation", testGatewayRelation},
		{"UpdateDeviceConcurrent", testUpdateDeviceConcurrent},
		{"DeleteDevice", testDeleteDevice},
		{"Settings", testSettings},
		{"CreateSettingOnce", testCreateSettingOnce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, closing(open))
		})
	}
}

// checker is a store that checks its own consistency (filestore, vaultstore, and
// cachestore in front of either).
type checker interface {
	// Check reports every inconsistency in the store; errors.ErrUnsupported if it
	// cannot check (a cachestore in front of a backend that cannot).
	Check(ctx context.Context) (store.Report, error)
}

// closing wraps open so every store a subtest opens is closed, and Close checked,
// when that subtest ends. Before that, a store that can check its own consistency
// must check clean: whatever the subtest did through the API, nothing it left may be
// half-written.
func closing(open func(t *testing.T) store.Store) func(t *testing.T) store.Store {
	return func(t *testing.T) store.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() {
			if c, ok := s.(checker); ok {
				rep, err := c.Check(context.Background())
				switch {
				case errors.Is(err, errors.ErrUnsupported):
				case err != nil:
					t.Errorf("Check: got error %v, want a report", err)
				case rep.Err() != nil:
					t.Errorf("Check after the subtest: got %v, want no problems", rep.Err())
				}
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: got error %v, want nil", err)
			}
		})
		return s
	}
}

// Instants carry nanoseconds and a non-UTC zone so a backend that truncates either is caught.
var (
	created = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*60*60))
	updated = created.Add(36*time.Hour + 7*time.Nanosecond)
)

const testPublicKeyPEM = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEapqUcjbB1REFfwfVQq97eF1fJ46o
aSv/HCW+fiABzDnneEOcQgUf8qmwnd3ONvilvYhuWrXYW3LozXliTr4TZQ==
-----END PUBLIC KEY-----
`

// testKey returns a distinct, Azure-looking base64 key for label.
func testKey(label string) string {
	b := make([]byte, 32)
	copy(b, label)
	for i := range b {
		b[i] ^= byte(i * 37)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func iotHub(name string) domain.Hub {
	return domain.Hub{
		Name:            name,
		Kind:            domain.KindIoTHub,
		Hostname:        name + ".azure-devices.net",
		Mode:            domain.SignDeviceKey,
		GatewayHostName: "edge-" + name + ".example.net",
		CACert:          testPublicKeyPEM,
		Settings:        map[string]string{"kind.option": "a value with = & ; characters"},
		DefaultTTL:      time.Hour,
		MaxTTL:          24*time.Hour + time.Nanosecond,
		CreatedAt:       created,
	}
}

func eventHubsHub(name string) domain.Hub {
	return domain.Hub{
		Name:       name,
		Kind:       domain.KindEventHubs,
		Hostname:   name + ".servicebus.windows.net",
		EntityPath: "telemetry",
		Mode:       domain.SignPolicy,
		PolicyName: "send-only",
		PolicyKey:  testKey("policy-" + name),
		// What the eventhubs kind sets: the key signs as its text.
		PolicyKeyText: true,
		DefaultTTL:    15 * time.Minute,
		MaxTTL:        2 * time.Hour,
		CreatedAt:     created,
	}
}

func dpsHub(name string) domain.Hub {
	return domain.Hub{
		Name:       name,
		Kind:       domain.KindDPS,
		Hostname:   "global.azure-devices-provisioning.net",
		IDScope:    "0ne00ABC123",
		Mode:       domain.SignGroupKey,
		PolicyKey:  testKey("group-" + name),
		DefaultTTL: time.Hour,
		MaxTTL:     time.Hour,
		CreatedAt:  created.UTC(),
	}
}

// hs256Device is a device with every field set, modules and binary secret included.
func hs256Device(id, hub string) domain.Device {
	return domain.Device{
		ID:           id,
		Hub:          hub,
		PrimaryKey:   testKey("primary-" + id),
		SecondaryKey: testKey("secondary-" + id),
		Modules: []domain.Module{
			{ID: "telemetry", PrimaryKey: testKey("mp-" + id), SecondaryKey: testKey("ms-" + id)},
			{ID: "$edgeAgent", PrimaryKey: testKey("ep-" + id), SecondaryKey: testKey("es-" + id)},
		},
		Auth: domain.Credential{
			Type:   domain.CredHS256,
			Secret: []byte{0x00, 0x01, 0xfe, 0xff, 'h', 's', 0x00, 0x80},
		},
		MaxTTL:    90*time.Minute + time.Nanosecond,
		RevokedAt: updated.Add(-time.Second),
		CreatedAt: created,
		UpdatedAt: updated,
	}
}

func mustCreateHub(t *testing.T, s store.Store, h domain.Hub) {
	t.Helper()
	if err := s.CreateHub(t.Context(), h); err != nil {
		t.Fatalf("CreateHub(%q): got error %v, want nil", h.Name, err)
	}
}

func mustCreateDevice(t *testing.T, s store.Store, d domain.Device) {
	t.Helper()
	if err := s.CreateDevice(t.Context(), d); err != nil {
		t.Fatalf("CreateDevice(%q): got error %v, want nil", d.ID, err)
	}
}

func mustGetDevice(t *testing.T, s store.Store, id string) domain.Device {
	t.Helper()
	d, err := s.GetDevice(t.Context(), id)
	if err != nil {
		t.Fatalf("GetDevice(%q): got error %v, want nil", id, err)
	}
	return d
}

func reportDiffs(t *testing.T, label string, diffs []string) {
	t.Helper()
	for _, d := range diffs {
		t.Errorf("%s: %s", label, d)
	}
}

// diffHub and diffDevice compare every field, so a field a backend forgets to
// persist fails the contract even when it was added after these tests.
func diffHub(got, want domain.Hub) []string { return diffValues(nil, "", got, want) }

func diffDevice(got, want domain.Device) []string { return diffValues(nil, "", got, want) }

var timeType = reflect.TypeFor[time.Time]()

// diffValues walks got and want field by field and names each field that differs.
// Times compare with Equal (a store may change the location) and nil and empty
// slices and maps are equal: the contract is about values, and a backend that
// serialises records need not preserve the distinction.
func diffValues(diffs []string, path string, got, want any) []string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	switch {
	case g.Type() == timeType:
		if !got.(time.Time).Equal(want.(time.Time)) {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", path, got, want))
		}
		return diffs
	case g.Kind() == reflect.Struct:
		for i := range g.NumField() {
			name := g.Type().Field(i).Name
			if path != "" {
				name = path + "." + name
			}
			diffs = diffValues(diffs, name, g.Field(i).Interface(), w.Field(i).Interface())
		}
		return diffs
	case (g.Kind() == reflect.Slice || g.Kind() == reflect.Map) && g.Len() == 0 && w.Len() == 0:
		return diffs
	}
	if !reflect.DeepEqual(got, want) {
		diffs = append(diffs, fmt.Sprintf("%s: got %#v, want %#v", path, got, want))
	}
	return diffs
}
