package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// The contract for creating, reading and listing devices.

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
		{"gateway", func() domain.Device { d := hs256Device("dev-gw", "hub-iot"); d.Gateway = true; return d }()},
		{"leaf with a parent", func() domain.Device {
			d := hs256Device("dev-leaf", "hub-iot")
			d.Parent, d.ParentCreatedAt = "dev-gw", time.Date(2026, 3, 4, 5, 6, 7, 891011, time.UTC)
			return d
		}()},
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
