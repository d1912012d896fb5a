package storetest

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// The contract for hubs and settings.

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

// testCreateSettingOnce: CreateSetting stores only an unset setting; of concurrent
// creates exactly one wins and its value is what every reader sees.
func testCreateSettingOnce(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	ctx := t.Context()
	if err := s.PutSetting(ctx, "put-first", []byte("put")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSetting(ctx, "put-first", []byte("create")); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSetting over a put setting: got %v, want ErrExists", err)
	}
	if got, err := s.GetSetting(ctx, "put-first"); err != nil || string(got) != "put" {
		t.Errorf("after a refused create: got %q, %v; want the put value", got, err)
	}

	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.CreateSetting(ctx, "raced", []byte{byte('a' + i)}) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("creates %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrExists):
			t.Errorf("create %d: got %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no concurrent create succeeded")
	}
	if got, err := s.GetSetting(ctx, "raced"); err != nil || !bytes.Equal(got, []byte{byte('a' + winner)}) {
		t.Errorf("GetSetting after the race: got %q, %v; want the winner's %q", got, err, []byte{byte('a' + winner)})
	}
}
