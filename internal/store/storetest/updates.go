package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// The contract for updating and deleting devices.

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
			want := orig.Clone()
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

// testGatewayRelation: the gateway flag and a leaf's parent are stored, changed and
// cleared by UpdateDevice like any field, and listed with the device. (The rules of
// the relation are the registry's; a store only keeps it.)
func testGatewayRelation(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateHub(t, s, iotHub("hub-gw"))
	gw := hs256Device("gw-1", "hub-gw")
	gw.Gateway = true
	mustCreateDevice(t, s, gw)
	leaf := hs256Device("leaf-1", "hub-gw")
	mustCreateDevice(t, s, leaf)

	steps := []struct {
		name        string
		fn          func(d *domain.Device)
		wantGateway bool
		wantParent  string
	}{
		{"set parent", func(d *domain.Device) { d.Parent = "gw-1" }, false, "gw-1"},
		{"unchanged by another field", func(d *domain.Device) { d.Disabled = true }, false, "gw-1"},
		{"clear parent", func(d *domain.Device) { d.Parent = "" }, false, ""},
		{"set gateway", func(d *domain.Device) { d.Gateway = true }, true, ""},
		{"clear gateway", func(d *domain.Device) { d.Gateway = false }, false, ""},
		{"parent again", func(d *domain.Device) { d.Parent = "gw-1" }, false, "gw-1"},
	}
	for _, st := range steps {
		got, err := s.UpdateDevice(t.Context(), "leaf-1", func(d *domain.Device) error { st.fn(d); return nil })
		if err != nil {
			t.Fatalf("%s: UpdateDevice: %v", st.name, err)
		}
		for _, d := range []domain.Device{got, mustGetDevice(t, s, "leaf-1")} {
			if d.Gateway != st.wantGateway || d.Parent != st.wantParent {
				t.Errorf("%s: got gateway %v parent %q, want %v %q", st.name, d.Gateway, d.Parent, st.wantGateway, st.wantParent)
			}
		}
	}
	listed := listAll(t, s, 1)
	if d := listed["leaf-1"]; d.Parent != "gw-1" || d.Gateway {
		t.Errorf("ListDevices leaf-1: got gateway %v parent %q, want false %q", d.Gateway, d.Parent, "gw-1")
	}
	if d := listed["gw-1"]; !d.Gateway || d.Parent != "" {
		t.Errorf("ListDevices gw-1: got gateway %v parent %q, want true \"\"", d.Gateway, d.Parent)
	}
}
