// Package storetest is the behavioural contract of store.Store, written once so the
// embedded file store and the Vault store are held to exactly the same rules.
//
// It tests only what the store.Store documentation promises; behaviour a backend
// chooses for itself (aliasing of returned records, cursor format, limits) belongs in
// that backend's own tests.
package storetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
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
		{"UpdateDeviceConcurrent", testUpdateDeviceConcurrent},
		{"DeleteDevice", testDeleteDevice},
		{"Settings", testSettings},
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
		DefaultTTL: 15 * time.Minute,
		MaxTTL:     2 * time.Hour,
		CreatedAt:  created,
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

func testHubRoundTrip(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	tests := []struct {
		name string
		hub  domain.Hub
	}{
		{"iothub device keys", iotHub("hub-iot")},
		{"eventhubs policy", eventHubsHub("hub-eh")},
		{"dps group key", dpsHub("hub-dps")},
		{"only a name", domain.Hub{Name: "hub-bare"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mustCreateHub(t, s, tc.hub)
			got, err := s.GetHub(t.Context(), tc.hub.Name)
			if err != nil {
				t.Fatalf("GetHub(%q): got error %v, want nil", tc.hub.Name, err)
			}
			reportDiffs(t, "GetHub("+tc.hub.Name+")", diffHub(got, tc.hub))
		})
	}
}

func testCreateHubDuplicate(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	orig := iotHub("hub-a")
	mustCreateHub(t, s, orig)
	tests := []struct {
		name    string
		hub     domain.Hub
		wantErr error
	}{
		{"same name", eventHubsHub("hub-a"), store.ErrExists},
		{"identical record", iotHub("hub-a"), store.ErrExists},
		{"new name", iotHub("hub-b"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CreateHub(t.Context(), tc.hub)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("CreateHub(%q): got error %v, want %v", tc.hub.Name, err, tc.wantErr)
			}
		})
	}
	got, err := s.GetHub(t.Context(), "hub-a")
	if err != nil {
		t.Fatalf("GetHub(hub-a): got error %v, want nil", err)
	}
	reportDiffs(t, "GetHub(hub-a) after rejected duplicate", diffHub(got, orig))
}

func testGetHubMissing(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	// Names that contain or extend an existing one must not match it.
	for _, name := range []string{"hub-b", "hub", "hub-a-2"} {
		_, err := s.GetHub(t.Context(), name)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetHub(%q): got error %v, want %v", name, err, store.ErrNotFound)
		}
	}
}

func testListHubs(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	hubs, err := s.ListHubs(t.Context())
	if err != nil {
		t.Fatalf("ListHubs on empty store: got error %v, want nil", err)
	}
	if len(hubs) != 0 {
		t.Errorf("ListHubs on empty store: got %d hubs, want 0", len(hubs))
	}

	want := []domain.Hub{iotHub("hub-a"), dpsHub("hub-b"), eventHubsHub("hub-c"), iotHub("hub-d")}
	for _, i := range []int{2, 0, 3, 1} {
		mustCreateHub(t, s, want[i])
	}
	got, err := s.ListHubs(t.Context())
	if err != nil {
		t.Fatalf("ListHubs: got error %v, want nil", err)
	}
	if gotNames, wantNames := hubNames(got), hubNames(want); !slices.Equal(gotNames, wantNames) {
		t.Fatalf("ListHubs names: got %q, want %q", gotNames, wantNames)
	}
	for i := range want {
		reportDiffs(t, "ListHubs["+want[i].Name+"]", diffHub(got[i], want[i]))
	}
}

func hubNames(hubs []domain.Hub) []string {
	names := make([]string, len(hubs))
	for i, h := range hubs {
		names[i] = h.Name
	}
	return names
}

func testDeleteHub(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-used"))
	mustCreateHub(t, s, dpsHub("hub-free"))
	mustCreateDevice(t, s, hs256Device("dev-1", "hub-used"))

	// Steps run in order: each depends on the state the previous ones left.
	steps := []struct {
		name    string
		do      func() error
		hub     string
		wantErr error
	}{
		{name: "missing hub", hub: "hub-none", wantErr: store.ErrNotFound},
		{name: "hub with a device", hub: "hub-used", wantErr: store.ErrConflict},
		{name: "unused hub", hub: "hub-free", wantErr: nil},
		{name: "already deleted", hub: "hub-free", wantErr: store.ErrNotFound},
		{name: "hub whose device was deleted", hub: "hub-used", wantErr: nil,
			do: func() error { return s.DeleteDevice(t.Context(), "dev-1") }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				if err := st.do(); err != nil {
					t.Fatalf("setup: got error %v, want nil", err)
				}
			}
			err := s.DeleteHub(t.Context(), st.hub)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("DeleteHub(%q): got error %v, want %v", st.hub, err, st.wantErr)
			}
			_, getErr := s.GetHub(t.Context(), st.hub)
			switch {
			case errors.Is(st.wantErr, store.ErrConflict) && getErr != nil:
				t.Errorf("GetHub(%q) after refused delete: got error %v, want nil", st.hub, getErr)
			case st.wantErr == nil && !errors.Is(getErr, store.ErrNotFound):
				t.Errorf("GetHub(%q) after delete: got error %v, want %v", st.hub, getErr, store.ErrNotFound)
			}
		})
	}

	hubs, err := s.ListHubs(t.Context())
	if err != nil {
		t.Fatalf("ListHubs: got error %v, want nil", err)
	}
	if len(hubs) != 0 {
		t.Errorf("ListHubs after deleting every hub: got %q, want none", hubNames(hubs))
	}
	// A deleted name is free again, and a device may be created under it.
	mustCreateHub(t, s, iotHub("hub-used"))
	mustCreateDevice(t, s, hs256Device("dev-2", "hub-used"))
}

func testDeviceRoundTrip(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-iot"))
	mustCreateHub(t, s, dpsHub("hub-dps"))

	es := hs256Device("dev-es256", "hub-iot")
	es.Auth = domain.Credential{Type: domain.CredES256, PublicKey: testPublicKeyPEM}
	es.Modules = es.Modules[:1]

	ed := hs256Device("dev-eddsa", "hub-dps")
	ed.PrimaryKey, ed.SecondaryKey, ed.Modules = "", "", nil
	ed.Auth = domain.Credential{Type: domain.CredEdDSA, PublicKey: testPublicKeyPEM}
	ed.Disabled = true
	ed.MaxTTL = 7 * time.Minute

	pinned := hs256Device("dev-x509", "hub-iot")
	pinned.Modules = nil
	pinned.Auth = domain.Credential{Type: domain.CredX509, CertFingerprint: strings.Repeat("0f", 32)}
	caIssued := hs256Device("dev-x509-ca", "hub-iot")
	caIssued.Modules = nil
	caIssued.Auth = domain.Credential{Type: domain.CredX509CA}

	tests := []struct {
		name   string
		device domain.Device
	}{
		{"hs256 with modules", hs256Device("dev-hs256", "hub-iot")},
		{"es256 with public key", es},
		{"eddsa disabled without keys", ed},
		{"x509 with fingerprint", pinned},
		{"x509-ca", caIssued},
		{"only id and hub", domain.Device{ID: "dev-bare", Hub: "hub-iot"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mustCreateDevice(t, s, tc.device)
			reportDiffs(t, "GetDevice("+tc.device.ID+")", diffDevice(mustGetDevice(t, s, tc.device.ID), tc.device))

			got, err := s.UpdateDevice(t.Context(), tc.device.ID, func(*domain.Device) error { return nil })
			if err != nil {
				t.Fatalf("UpdateDevice(%q) no-op: got error %v, want nil", tc.device.ID, err)
			}
			reportDiffs(t, "UpdateDevice("+tc.device.ID+") no-op", diffDevice(got, tc.device))
			reportDiffs(t, "GetDevice("+tc.device.ID+") after no-op update", diffDevice(mustGetDevice(t, s, tc.device.ID), tc.device))
		})
	}

	listed := listAll(t, s, 2)
	for _, tc := range tests {
		got, ok := listed[tc.device.ID]
		if !ok {
			t.Errorf("ListDevices: device %q missing", tc.device.ID)
			continue
		}
		reportDiffs(t, "ListDevices["+tc.device.ID+"]", diffDevice(got, tc.device))
	}
}

// listAll pages through every device and returns them by ID.
func listAll(t *testing.T, s store.Store, limit int) map[string]domain.Device {
	t.Helper()
	all := map[string]domain.Device{}
	cursor := ""
	for range 10000 {
		page, err := s.ListDevices(t.Context(), cursor, limit)
		if err != nil {
			t.Fatalf("ListDevices(%q, %d): got error %v, want nil", cursor, limit, err)
		}
		for _, d := range page.Devices {
			all[d.ID] = d
		}
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
	t.Fatalf("ListDevices: still paging after 10000 pages")
	return nil
}

func testCreateDeviceErrors(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	mustCreateHub(t, s, iotHub("hub-b"))
	orig := hs256Device("dev-1", "hub-a")
	mustCreateDevice(t, s, orig)

	tests := []struct {
		name    string
		device  domain.Device
		wantErr error
	}{
		{"duplicate ID", hs256Device("dev-1", "hub-a"), store.ErrExists},
		{"duplicate ID in another hub", hs256Device("dev-1", "hub-b"), store.ErrExists},
		{"hub does not exist", hs256Device("dev-2", "hub-none"), store.ErrNotFound},
		{"new device", hs256Device("dev-3", "hub-b"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CreateDevice(t.Context(), tc.device)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("CreateDevice(%q in %q): got error %v, want %v", tc.device.ID, tc.device.Hub, err, tc.wantErr)
			}
		})
	}

	reportDiffs(t, "GetDevice(dev-1) after rejected duplicates", diffDevice(mustGetDevice(t, s, "dev-1"), orig))
	if _, err := s.GetDevice(t.Context(), "dev-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice(dev-2) after rejected create: got error %v, want %v", err, store.ErrNotFound)
	}
	if err := s.DeleteHub(t.Context(), "hub-none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteHub(hub-none) after rejected create: got error %v, want %v", err, store.ErrNotFound)
	}
}

func testGetDeviceMissing(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	mustCreateDevice(t, s, hs256Device("dev-1", "hub-a"))
	for _, id := range []string{"dev-2", "DEV-1", "dev-10", "dev-", "hub-a"} {
		if _, err := s.GetDevice(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetDevice(%q): got error %v, want %v", id, err, store.ErrNotFound)
		}
	}
}

func testDeviceIDsCaseSensitive(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	upper, lower := hs256Device("A1", "hub-a"), hs256Device("a1", "hub-a")
	mustCreateDevice(t, s, upper)
	mustCreateDevice(t, s, lower) // must not be ErrExists
	mustCreateDevice(t, s, hs256Device("B2", "hub-a"))

	if upper.PrimaryKey == lower.PrimaryKey {
		t.Fatal("test fixture: A1 and a1 must have different keys")
	}
	reportDiffs(t, "GetDevice(A1)", diffDevice(mustGetDevice(t, s, "A1"), upper))
	reportDiffs(t, "GetDevice(a1)", diffDevice(mustGetDevice(t, s, "a1"), lower))

	page, err := s.ListDevices(t.Context(), "", 10)
	if err != nil {
		t.Fatalf("ListDevices: got error %v, want nil", err)
	}
	if got, want := deviceIDs(page.Devices), []string{"A1", "B2", "a1"}; !slices.Equal(got, want) {
		t.Errorf("ListDevices IDs: got %q, want %q", got, want)
	}

	if err := s.DeleteDevice(t.Context(), "a1"); err != nil {
		t.Fatalf("DeleteDevice(a1): got error %v, want nil", err)
	}
	if _, err := s.GetDevice(t.Context(), "a1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice(a1) after delete: got error %v, want %v", err, store.ErrNotFound)
	}
	reportDiffs(t, "GetDevice(A1) after deleting a1", diffDevice(mustGetDevice(t, s, "A1"), upper))
}

func deviceIDs(devices []domain.Device) []string {
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	return ids
}

func testListDevicesPaging(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name  string
		n     int
		limit int
	}{
		{"25 by 7", 25, 7},
		{"25 by 1", 25, 1},
		{"25 by 5 exact fit", 25, 5},
		{"25 by 25", 25, 25},
		{"25 by 100", 25, 100},
		{"empty store", 0, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			mustCreateHub(t, s, iotHub("hub-a"))
			mustCreateHub(t, s, dpsHub("hub-b"))
			byID := map[string]domain.Device{}
			var want []string
			for i := range tc.n {
				hub := []string{"hub-a", "hub-b"}[i%2]
				d := hs256Device(fmt.Sprintf("dev-%03d", i), hub)
				byID[d.ID] = d
				want = append(want, d.ID)
			}
			// Create out of order so a backend that lists in insertion order fails.
			order := slices.Clone(want)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, id := range order {
				mustCreateDevice(t, s, byID[id])
			}

			var got []string
			cursor := ""
			for pages := 1; ; pages++ {
				if pages > tc.n+2 {
					t.Fatalf("ListDevices: got more than %d pages, want at most %d", pages-1, tc.n+1)
				}
				page, err := s.ListDevices(t.Context(), cursor, tc.limit)
				if err != nil {
					t.Fatalf("ListDevices(%q, %d): got error %v, want nil", cursor, tc.limit, err)
				}
				if len(page.Devices) > tc.limit {
					t.Errorf("page %d: got %d devices, want at most %d", pages, len(page.Devices), tc.limit)
				}
				if tc.n > 0 && len(page.Devices) == 0 {
					t.Errorf("page %d: got no devices with Next %q, want a non-empty page", pages, page.Next)
				}
				for _, d := range page.Devices {
					got = append(got, d.ID)
					reportDiffs(t, "ListDevices["+d.ID+"]", diffDevice(d, byID[d.ID]))
				}
				lastDevice := tc.n > 0 && slices.Contains(deviceIDs(page.Devices), want[len(want)-1])
				if lastDevice && page.Next != "" {
					t.Errorf("page %d holds the last device: got Next %q, want \"\"", pages, page.Next)
				}
				if page.Next == "" {
					break
				}
				cursor = page.Next
			}
			if !slices.Equal(got, want) {
				t.Errorf("ListDevices by %d: got IDs %q, want %q", tc.limit, got, want)
			}
		})
	}
}

func testUpdateDevice(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	errBoom := errors.New("boom")

	tests := []struct {
		name    string
		id      string
		create  bool
		fn      func(*domain.Device) error
		wantErr error
		// changed says fn's edits must be stored; otherwise the record must be unchanged.
		changed bool
	}{
		{
			name: "change every kind of field", id: "dev-change", create: true, changed: true,
			fn: func(d *domain.Device) error {
				d.PrimaryKey, d.SecondaryKey = d.SecondaryKey, testKey("rotated")
				d.Modules = append(d.Modules, domain.Module{ID: "new-module", PrimaryKey: testKey("nm")})
				d.Modules[0].SecondaryKey = testKey("module-rotated")
				d.Auth = domain.Credential{Type: domain.CredES256, PublicKey: testPublicKeyPEM}
				d.Disabled = true
				d.MaxTTL = 5 * time.Minute
				d.UpdatedAt = updated.Add(time.Hour)
				return nil
			},
		},
		{
			name: "remove modules", id: "dev-shrink", create: true, changed: true,
			fn: func(d *domain.Device) error {
				d.Modules = nil
				return nil
			},
		},
		{
			name: "fn error stores nothing", id: "dev-fail", create: true, wantErr: errBoom,
			fn: func(d *domain.Device) error {
				// Edits in place, through shared backing arrays too, must all be discarded.
				d.Disabled = true
				d.PrimaryKey = "changed"
				d.Modules[0].PrimaryKey = "changed"
				d.Auth.Secret[0] ^= 0xff
				return fmt.Errorf("validate device: %w", errBoom)
			},
		},
		{
			name: "missing device", id: "dev-missing", wantErr: store.ErrNotFound,
			fn: func(*domain.Device) error { return nil },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := hs256Device(tc.id, "hub-a")
			if tc.create {
				mustCreateDevice(t, s, orig)
			}
			want := cloneDevice(orig)
			if tc.changed {
				if err := tc.fn(&want); err != nil {
					t.Fatalf("fn on expected copy: got error %v, want nil", err)
				}
			}

			called := 0
			got, err := s.UpdateDevice(t.Context(), tc.id, func(d *domain.Device) error {
				called++
				return tc.fn(d)
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("UpdateDevice(%q): got error %v, want %v", tc.id, err, tc.wantErr)
			}
			if !tc.create {
				if called != 0 {
					t.Errorf("UpdateDevice(%q) on missing device: got fn called %d times, want 0", tc.id, called)
				}
				if _, err := s.GetDevice(t.Context(), tc.id); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("GetDevice(%q): got error %v, want %v", tc.id, err, store.ErrNotFound)
				}
				return
			}
			if called != 1 {
				t.Errorf("UpdateDevice(%q): got fn called %d times, want 1", tc.id, called)
			}
			if err == nil {
				reportDiffs(t, "UpdateDevice("+tc.id+") result", diffDevice(got, want))
			}
			reportDiffs(t, "GetDevice("+tc.id+") after update", diffDevice(mustGetDevice(t, s, tc.id), want))
		})
	}
}

func testUpdateDeviceConcurrent(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	orig := hs256Device("dev-busy", "hub-a")
	orig.Modules = nil
	mustCreateDevice(t, s, orig)

	const writers = 20
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = s.UpdateDevice(t.Context(), "dev-busy", func(d *domain.Device) error {
				d.Modules = append(d.Modules, domain.Module{ID: fmt.Sprintf("m-%02d", i)})
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("UpdateDevice from writer %d: got error %v, want nil", i, err)
		}
	}

	got := mustGetDevice(t, s, "dev-busy")
	ids := make([]string, 0, len(got.Modules))
	for _, m := range got.Modules {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	want := make([]string, writers)
	for i := range writers {
		want[i] = fmt.Sprintf("m-%02d", i)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("modules after %d concurrent updates: got %q, want %q", writers, ids, want)
	}
}

func testDeleteDevice(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-a"))
	keep := hs256Device("dev-keep", "hub-a")
	mustCreateDevice(t, s, keep)
	mustCreateDevice(t, s, hs256Device("dev-gone", "hub-a"))

	steps := []struct {
		name    string
		id      string
		wantErr error
	}{
		{"existing device", "dev-gone", nil},
		{"already deleted", "dev-gone", store.ErrNotFound},
		{"never existed", "dev-none", store.ErrNotFound},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := s.DeleteDevice(t.Context(), st.id); !errors.Is(err, st.wantErr) {
				t.Fatalf("DeleteDevice(%q): got error %v, want %v", st.id, err, st.wantErr)
			}
			if _, err := s.GetDevice(t.Context(), st.id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetDevice(%q) after delete: got error %v, want %v", st.id, err, store.ErrNotFound)
			}
		})
	}

	all := listAll(t, s, 10)
	if got, want := len(all), 1; got != want {
		t.Errorf("ListDevices after delete: got %d devices, want %d", got, want)
	}
	reportDiffs(t, "GetDevice(dev-keep)", diffDevice(mustGetDevice(t, s, "dev-keep"), keep))

	// The ID is free again, and the new record shares nothing with the deleted one.
	reborn := hs256Device("dev-gone", "hub-a")
	reborn.Modules = nil
	reborn.Auth = domain.Credential{Type: domain.CredEdDSA, PublicKey: testPublicKeyPEM}
	mustCreateDevice(t, s, reborn)
	reportDiffs(t, "GetDevice(dev-gone) recreated", diffDevice(mustGetDevice(t, s, "dev-gone"), reborn))
}

func testSettings(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	binary := []byte{0x00, 0xff, 0x10, 0x00, 0x7f}
	// Steps run in order against one store.
	steps := []struct {
		name    string
		put     []byte // stored under key before reading, when non-nil
		key     string
		want    []byte
		wantErr error
	}{
		{name: "unset", key: "admin-token-hash", wantErr: store.ErrNotFound},
		{name: "put then get", key: "admin-token-hash", put: []byte("sha256:first-value"), want: []byte("sha256:first-value")},
		{name: "overwrite with shorter value", key: "admin-token-hash", put: []byte("second"), want: []byte("second")},
		{name: "binary value", key: "other", put: binary, want: binary},
		{name: "first key untouched", key: "admin-token-hash", want: []byte("second")},
		{name: "prefix of a set name", key: "admin-token", wantErr: store.ErrNotFound},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.put != nil {
				if err := s.PutSetting(t.Context(), st.key, st.put); err != nil {
					t.Fatalf("PutSetting(%q): got error %v, want nil", st.key, err)
				}
			}
			got, err := s.GetSetting(t.Context(), st.key)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("GetSetting(%q): got error %v, want %v", st.key, err, st.wantErr)
			}
			if err == nil && !bytes.Equal(got, st.want) {
				t.Errorf("GetSetting(%q): got %q, want %q", st.key, got, st.want)
			}
		})
	}
}

func reportDiffs(t *testing.T, label string, diffs []string) {
	t.Helper()
	for _, d := range diffs {
		t.Errorf("%s: %s", label, d)
	}
}

func diffField[T comparable](diffs []string, field string, got, want T) []string {
	if got != want {
		return append(diffs, fmt.Sprintf("%s: got %#v, want %#v", field, got, want))
	}
	return diffs
}

func diffTime(diffs []string, field string, got, want time.Time) []string {
	if !got.Equal(want) {
		return append(diffs, fmt.Sprintf("%s: got %v, want %v", field, got, want))
	}
	return diffs
}

// diffHub compares field by field so a failure names the field that did not round-trip.
func diffHub(got, want domain.Hub) []string {
	var d []string
	d = diffField(d, "Name", got.Name, want.Name)
	d = diffField(d, "Kind", got.Kind, want.Kind)
	d = diffField(d, "Hostname", got.Hostname, want.Hostname)
	d = diffField(d, "EntityPath", got.EntityPath, want.EntityPath)
	d = diffField(d, "IDScope", got.IDScope, want.IDScope)
	d = diffField(d, "Mode", got.Mode, want.Mode)
	d = diffField(d, "PolicyName", got.PolicyName, want.PolicyName)
	d = diffField(d, "PolicyKey", got.PolicyKey, want.PolicyKey)
	d = diffField(d, "GatewayHostName", got.GatewayHostName, want.GatewayHostName)
	d = diffField(d, "CACert", got.CACert, want.CACert)
	d = diffField(d, "DefaultTTL", got.DefaultTTL, want.DefaultTTL)
	d = diffField(d, "MaxTTL", got.MaxTTL, want.MaxTTL)
	d = diffTime(d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	return d
}

// diffDevice treats nil and empty slices as equal: the contract is about values, and a
// backend that serialises records need not preserve the distinction.
func diffDevice(got, want domain.Device) []string {
	var d []string
	d = diffField(d, "ID", got.ID, want.ID)
	d = diffField(d, "Hub", got.Hub, want.Hub)
	d = diffField(d, "PrimaryKey", got.PrimaryKey, want.PrimaryKey)
	d = diffField(d, "SecondaryKey", got.SecondaryKey, want.SecondaryKey)
	if len(got.Modules) != len(want.Modules) {
		d = append(d, fmt.Sprintf("Modules: got %d modules %+v, want %d %+v", len(got.Modules), got.Modules, len(want.Modules), want.Modules))
	} else {
		for i := range want.Modules {
			d = diffField(d, fmt.Sprintf("Modules[%d]", i), got.Modules[i], want.Modules[i])
		}
	}
	d = diffField(d, "Auth.Type", got.Auth.Type, want.Auth.Type)
	if !bytes.Equal(got.Auth.Secret, want.Auth.Secret) {
		d = append(d, fmt.Sprintf("Auth.Secret: got %x, want %x", got.Auth.Secret, want.Auth.Secret))
	}
	d = diffField(d, "Auth.PublicKey", got.Auth.PublicKey, want.Auth.PublicKey)
	d = diffField(d, "Auth.CertFingerprint", got.Auth.CertFingerprint, want.Auth.CertFingerprint)
	d = diffField(d, "Disabled", got.Disabled, want.Disabled)
	d = diffField(d, "MaxTTL", got.MaxTTL, want.MaxTTL)
	d = diffTime(d, "RevokedAt", got.RevokedAt, want.RevokedAt)
	d = diffTime(d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	d = diffTime(d, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	return d
}

func cloneDevice(d domain.Device) domain.Device {
	d.Modules = slices.Clone(d.Modules)
	d.Auth.Secret = bytes.Clone(d.Auth.Secret)
	return d
}
