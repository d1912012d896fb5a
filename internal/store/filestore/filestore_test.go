package filestore_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustOpen(t, storePath(t), newKey(t))
	})
}

func TestOpenWrongKey(t *testing.T) {
	path, key := populatedFile(t)
	before, err := os.ReadFile(path)
	must(t, err)

	_, err = filestore.Open(path, newKey(t))
	if !errors.Is(err, filestore.ErrWrongKey) {
		t.Fatalf("Open with another key: got error %v, want %v", err, filestore.ErrWrongKey)
	}
	if errors.Is(err, filestore.ErrCorrupt) {
		t.Errorf("Open with another key: got %v, want it not to match ErrCorrupt", err)
	}
	after, err := os.ReadFile(path)
	must(t, err)
	if !bytes.Equal(after, before) {
		t.Error("Open with another key changed the file")
	}
	mustClose(t, mustOpen(t, path, key))
}

func TestOpenRejectsBadKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := storePath(t)
			s, err := filestore.Open(path, make([]byte, n))
			if err == nil {
				s.Close()
				t.Fatalf("Open with %d-byte key: got nil error, want one", n)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open with %d-byte key: got file stat error %v, want no file created", n, err)
			}
		})
	}
}

func TestSecondOpenFails(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))

	tryOpen := func(stage string) {
		t.Helper()
		s2, err := filestore.Open(path, key)
		if err == nil {
			s2.Close()
		}
		if !errors.Is(err, filestore.ErrLocked) {
			t.Errorf("second Open %s: got error %v, want %v", stage, err, filestore.ErrLocked)
		}
	}
	tryOpen("while the first is open")

	mustClose(t, s)
	s = mustOpen(t, path, key)
	if _, err := s.GetHub(t.Context(), "hub-a"); err != nil {
		t.Errorf("GetHub after reopen: got error %v, want nil", err)
	}
}

func TestFileHoldsNoPlaintext(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	h := policyHub("hub-a")
	h.PolicyKey = "PolicyKey-Q7xNw2rLm9Zt"
	must(t, s.CreateHub(ctx, h))
	d := device("device-id-Zq8vK3pT", "hub-a")
	d.PrimaryKey = "PrimaryKey-hG5sJ1wX"
	d.SecondaryKey = "SecondaryKey-bN4cV8yR"
	d.Modules = []domain.Module{{ID: "module-id-Lp0oKi9u", PrimaryKey: "ModulePrimary-aS2dF4gH", SecondaryKey: "ModuleSecondary-jK6lZ8xC"}}
	d.Auth.Secret = []byte("BootstrapSecret-vB1nM3qW")
	must(t, s.CreateDevice(ctx, d))
	must(t, s.PutSetting(ctx, "admin-token-hash", []byte("SettingValue-eR5tY7uI")))

	// Device IDs, hub and setting names are the file's keys, in clear by design;
	// everything in a record (keys, credentials, module IDs) and every value is sealed.
	needles := []string{
		h.PolicyKey, d.PrimaryKey, d.SecondaryKey,
		d.Modules[0].ID, d.Modules[0].PrimaryKey, d.Modules[0].SecondaryKey,
		string(d.Auth.Secret), base64.StdEncoding.EncodeToString(d.Auth.Secret),
		"SettingValue-eR5tY7uI",
	}
	check := func(stage string) {
		t.Helper()
		raw, err := os.ReadFile(path)
		must(t, err)
		for _, n := range needles {
			if bytes.Contains(raw, []byte(n)) {
				t.Errorf("file %s: contains %q in plaintext, want it encrypted", stage, n)
			}
		}
	}
	mustClose(t, s)
	check("as written")

	s = mustOpen(t, path, key)
	_, err := s.UpdateDevice(ctx, d.ID, func(d *domain.Device) error { d.Disabled = true; return nil })
	must(t, err)
	must(t, s.DeleteDevice(ctx, d.ID))
	mustClose(t, s)
	check("after an update and a delete (freed pages)")
}

func TestReturnedRecordsAreCopies(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	in := device("dev-1", "hub-a")
	must(t, s.CreateDevice(ctx, in))
	want := dump(t, s, "setting").encode(t)

	scribble := func(d *domain.Device) {
		d.Modules[0].PrimaryKey = "scribbled"
		d.Auth.Secret[0] ^= 0xff
	}
	scribble(&in)
	got, err := s.GetDevice(ctx, "dev-1")
	must(t, err)
	scribble(&got)
	page, err := s.ListDevices(ctx, "", 10)
	must(t, err)
	scribble(&page.Devices[0])
	var kept *domain.Device
	updated, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error {
		kept = d
		return nil
	})
	must(t, err)
	scribble(&updated)
	scribble(kept)
	if got := dump(t, s, "setting").encode(t); got != want {
		t.Errorf("after editing returned devices:\ngot  %s\nwant %s", got, want)
	}

	value := []byte("value")
	must(t, s.PutSetting(ctx, "setting", value))
	value[0] = 'X'
	v, err := s.GetSetting(ctx, "setting")
	must(t, err)
	v[1] = 'X'
	if v, _ := s.GetSetting(ctx, "setting"); string(v) != "value" {
		t.Errorf("setting after editing passed and returned slices: got %q, want %q", v, "value")
	}
}

func TestCanceledContext(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))
	must(t, s.CreateDevice(t.Context(), device("dev-1", "hub-a")))
	want := dump(t, s, "setting").encode(t)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	wantFromEach(t, storeCalls(ctx, s), context.Canceled, "with canceled context")
	if got := dump(t, s, "setting").encode(t); got != want {
		t.Errorf("contents after canceled calls:\ngot  %s\nwant %s", got, want)
	}
}

func TestClosedStore(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))
	mustClose(t, s)
	wantFromEach(t, storeCalls(t.Context(), s), filestore.ErrClosed, "after Close")
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got error %v, want nil", err)
	}
}

// openWithDevices opens a fresh store holding hub-a and n devices on it, dev-0 to
// dev-(n-1).
func openWithDevices(t *testing.T, n int) *filestore.Store {
	t.Helper()
	s := mustOpen(t, storePath(t), newKey(t))
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))
	for i := range n {
		must(t, s.CreateDevice(t.Context(), device(fmt.Sprintf("dev-%d", i), "hub-a")))
	}
	return s
}

// storeCall is one call of a Store method, named after it.
type storeCall struct {
	name string
	call func() error
}

// wantFromEach runs each call as a subtest and wants an error matching want (when says
// in what state, for the failure message).
func wantFromEach(t *testing.T, calls []storeCall, want error, when string) {
	t.Helper()
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, want) {
				t.Errorf("%s %s: got error %v, want %v", tc.name, when, err, want)
			}
		})
	}
}

// storeCalls calls every Store method once; each would change the store (or read it)
// if it succeeded: hub-a and dev-1 are there, hub-b and dev-2 are not.
func storeCalls(ctx context.Context, s *filestore.Store) []storeCall {
	return []storeCall{
		{"CreateHub", func() error { return s.CreateHub(ctx, iotHub("hub-b")) }},
		{"GetHub", func() error { _, err := s.GetHub(ctx, "hub-a"); return err }},
		{"ListHubs", func() error { _, err := s.ListHubs(ctx); return err }},
		{"DeleteHub", func() error { return s.DeleteHub(ctx, "hub-a") }},
		{"CreateDevice", func() error { return s.CreateDevice(ctx, device("dev-2", "hub-a")) }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "dev-1"); return err }},
		{"ListDevices", func() error { _, err := s.ListDevices(ctx, "", 10); return err }},
		{"UpdateDevice", func() error {
			_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { d.Disabled = true; return nil })
			return err
		}},
		{"DeleteDevice", func() error { return s.DeleteDevice(ctx, "dev-1") }},
		{"GetSetting", func() error { _, err := s.GetSetting(ctx, "setting"); return err }},
		{"PutSetting", func() error { return s.PutSetting(ctx, "setting", []byte("v")) }},
		{"ListChildren", func() error { _, err := s.ListChildren(ctx, "gw", "", 10); return err }},
		{"Check", func() error { _, err := s.Check(ctx); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	}
}

func TestUpdateDeviceHubAndID(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	must(t, s.CreateHub(ctx, iotHub("hub-b")))
	must(t, s.CreateDevice(ctx, device("dev-1", "hub-a")))

	tests := []struct {
		name    string
		fn      func(*domain.Device)
		wantOK  bool
		wantErr error // when !wantOK, nil accepts any error
		wantHub string
	}{
		{name: "move to missing hub", fn: func(d *domain.Device) { d.Hub = "hub-none" }, wantErr: store.ErrNotFound, wantHub: "hub-a"},
		{name: "change ID", fn: func(d *domain.Device) { d.ID = "dev-2" }, wantHub: "hub-a"},
		{name: "move to other hub", fn: func(d *domain.Device) { d.Hub = "hub-b" }, wantOK: true, wantHub: "hub-b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { tc.fn(d); return nil })
			switch {
			case tc.wantOK && err != nil:
				t.Fatalf("UpdateDevice: got error %v, want nil", err)
			case !tc.wantOK && err == nil:
				t.Fatalf("UpdateDevice: got nil error, want one")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("UpdateDevice: got error %v, want %v", err, tc.wantErr)
			}
			d, err := s.GetDevice(ctx, "dev-1")
			must(t, err)
			if d.Hub != tc.wantHub {
				t.Errorf("Hub: got %q, want %q", d.Hub, tc.wantHub)
			}
		})
	}
	if _, err := s.GetDevice(ctx, "dev-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice(dev-2): got error %v, want %v", err, store.ErrNotFound)
	}

	// The per-hub device count must follow the move, in memory and after replay.
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if err := s.DeleteHub(ctx, "hub-b"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("DeleteHub(hub-b) holding the moved device: got error %v, want %v", err, store.ErrConflict)
	}
	if err := s.DeleteHub(ctx, "hub-a"); err != nil {
		t.Errorf("DeleteHub(hub-a) after its device moved: got error %v, want nil", err)
	}
}

func TestListDevicesCursor(t *testing.T) {
	s := openWithDevices(t, 10)
	ctx := t.Context()
	page, err := s.ListDevices(ctx, "", 3)
	must(t, err)
	if page.Next != "dev-2" {
		t.Fatalf("Next: got %q, want %q", page.Next, "dev-2")
	}
	// The cursor stays valid when its device is deleted between pages.
	must(t, s.DeleteDevice(ctx, "dev-2"))
	page, err = s.ListDevices(ctx, page.Next, 3)
	must(t, err)
	ids := make([]string, len(page.Devices))
	for i, d := range page.Devices {
		ids[i] = d.ID
	}
	if want := []string{"dev-3", "dev-4", "dev-5"}; !slices.Equal(ids, want) {
		t.Errorf("page after deleted cursor: got %q, want %q", ids, want)
	}
}

func TestListDevicesDefaultLimit(t *testing.T) {
	path, key := storePath(t), newKey(t)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	var devices []domain.Device
	for i := range filestore.DefaultPageSize + 5 {
		devices = append(devices, device(fmt.Sprintf("dev-%04d", i), "hub-a"))
	}
	must(t, filestore.WriteSnapshotForTest(path, key, []domain.Hub{iotHub("hub-a")}, devices))
	s := mustOpen(t, path, key)
	for _, limit := range []int{0, -1} {
		page, err := s.ListDevices(t.Context(), "", limit)
		must(t, err)
		if got := len(page.Devices); got != filestore.DefaultPageSize {
			t.Errorf("ListDevices limit %d: got %d devices, want %d", limit, got, filestore.DefaultPageSize)
		}
	}
}

func TestEmptyNamesRejected(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	want := dump(t, s, "").encode(t)
	calls := []struct {
		name string
		call func() error
	}{
		{"CreateHub", func() error { return s.CreateHub(ctx, domain.Hub{}) }},
		{"CreateDevice", func() error { return s.CreateDevice(ctx, device("", "hub-a")) }},
		{"PutSetting", func() error { return s.PutSetting(ctx, "", []byte("v")) }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Errorf("%s with empty name: got nil error, want one", tc.name)
			}
		})
	}
	if got := dump(t, s, "").encode(t); got != want {
		t.Errorf("contents:\ngot  %s\nwant %s", got, want)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := openWithDevices(t, 10)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprintf("dev-%d", (w+i)%10)
				_, err := s.UpdateDevice(ctx, id, func(d *domain.Device) error {
					// Primary and secondary always change together; a reader seeing
					// them differ saw a torn record.
					n := fmt.Sprintf("%d-%d", w, i)
					d.PrimaryKey, d.SecondaryKey = "p"+n, "s"+n
					return nil
				})
				if err != nil {
					errs <- err
				}
				// Creates and deletes share batches with the updates.
				extra := fmt.Sprintf("extra-%d-%d", w, i)
				if err := s.CreateDevice(ctx, device(extra, "hub-a")); err != nil {
					errs <- err
				}
				if i%2 == 0 {
					if err := s.DeleteDevice(ctx, extra); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 200 {
				page, err := s.ListDevices(ctx, "", 4)
				if err != nil {
					errs <- err
					return
				}
				for _, d := range page.Devices {
					if d.PrimaryKey[0] == 'p' && d.PrimaryKey[1:] != d.SecondaryKey[1:] {
						errs <- fmt.Errorf("device %q: got keys %q and %q, want them from one update", d.ID, d.PrimaryKey, d.SecondaryKey)
					}
				}
				if _, err := s.GetDevice(ctx, "dev-3"); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mustCheckClean(t, s)
}
