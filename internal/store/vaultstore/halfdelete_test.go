package vaultstore_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestInterruptedDeletes stages, on a real Vault, what a tokensvc killed while deleting
// a KV v2 record leaves: the record's metadata without its version data, which Vault
// answers with a 500 on every read. CI's kill -9 test once left a device claim so; until
// an operator removed it, every create and delete of that name failed with 503.
// Each such record must read as absent, be reported by Check, and be replaced by the
// next create of its name.
func TestInterruptedDeletes(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.MountKV(t, "halfdel")
	c, prefix := srv.Client(t), freshPrefix()
	s := mustStoreWith(t, c, vaultstore.Config{Mount: "halfdel", Prefix: prefix})
	ctx := t.Context()

	// A hub and a device, then their deletes' claims as a kill would leave them:
	// claims on a hub and a device name, released part way.
	mustCreateHub(t, s, iotHub("hub-gone", true))
	mustCreateDevice(t, s, keyedDevice("dev-gone", "hub-gone"))
	claim := map[string]any{"owner": "0123", "op": "delete", "claimedAt": time.Now().UTC()}
	for _, p := range []string{"claims/devices/" + hex.EncodeToString([]byte("dev-new")), "claims/hubs/" + hex.EncodeToString([]byte("hub-new"))} {
		if _, err := c.KVv2("halfdel").Put(ctx, prefix+"/"+p, claim); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.DropVersionData(t, "halfdel"); n < 4 {
		t.Fatalf("DropVersionData deleted %d versions, want at least the 4 records'", n)
	}

	for _, tt := range []struct {
		name string
		get  func() error
	}{
		{"GetHub", func() error { _, err := s.GetHub(ctx, "hub-gone"); return err }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "dev-gone"); return err }},
	} {
		if err := tt.get(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a record whose delete was interrupted: got %v, want ErrNotFound", tt.name, err)
		}
	}

	rep, err := s.Check(ctx)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("Check problems: got %v, want none", rep.Problems)
	}
	var got []string
	for _, l := range rep.Leftovers {
		got = append(got, fmt.Sprintf("%s %s", l.Kind, l.Name))
	}
	for _, want := range []string{
		string(store.LeftoverDeletedRecord) + " hub-gone",
		string(store.LeftoverDeletedRecord) + " dev-gone",
		string(store.LeftoverDeviceClaim) + " dev-new",
		string(store.LeftoverHubClaim) + " hub-new",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("Check leftovers %q: missing %q", got, want)
		}
	}

	// The next creates take every one of them over: the claims (taken only for keys
	// kept in Transit), then the records.
	mustCreateHub(t, s, domain.Hub{Name: "hub-new", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "d", PolicyKey: testKey("p"), Transit: true})
	mustCreateHub(t, s, iotHub("hub-gone", true))
	mustCreateDevice(t, s, keyedDevice("dev-new", "hub-gone"))
	mustCreateDevice(t, s, keyedDevice("dev-gone", "hub-gone"))
	for _, id := range []string{"dev-new", "dev-gone"} {
		if d, err := s.GetDevice(ctx, id); err != nil || d.ID != id {
			t.Errorf("GetDevice(%q) after its create: got %q, %v", id, d.ID, err)
		}
	}
	if err := s.DeleteDevice(ctx, "dev-gone"); err != nil {
		t.Errorf("DeleteDevice after the takeover: %v", err)
	}
	rep, err = s.Check(ctx)
	if err != nil {
		t.Fatalf("Check after the creates: %v", err)
	}
	if len(rep.Problems) != 0 || len(rep.Leftovers) != 0 || rep.Hubs != 2 || rep.Devices != 1 {
		t.Errorf("Check after the creates: got %d hubs, %d devices, problems %v, leftovers %v; want 2, 1 and none",
			rep.Hubs, rep.Devices, rep.Problems, rep.Leftovers)
	}
}

// TestInterruptedDeleteTakenOverOnce: concurrent creates of one half-deleted name, as
// from several replicas, make exactly one winner, whose value stays; the others find
// the name taken. (A takeover that wrote on the metadata's version without checking
// that version's data let a later creator overwrite the first: two to five of sixteen
// won in every round.)
func TestInterruptedDeleteTakenOverOnce(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.MountKV(t, "halfrace")
	c := srv.Client(t)
	s := mustStoreWith(t, c, vaultstore.Config{Mount: "halfrace", Prefix: freshPrefix()})
	ctx := t.Context()
	const rounds, creators = 8, 16
	for r := range rounds {
		if err := s.CreateSetting(ctx, fmt.Sprintf("race-%d", r), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	srv.DropVersionData(t, "halfrace")
	for r := range rounds {
		name := fmt.Sprintf("race-%d", r)
		errs := make([]error, creators)
		var wg sync.WaitGroup
		for i := range creators {
			wg.Go(func() { errs[i] = s.CreateSetting(ctx, name, []byte(strconv.Itoa(i))) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("%s: creators %d and %d both succeeded", name, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrExists):
				t.Errorf("%s: creator %d: got %v, want nil or ErrExists", name, i, err)
			}
		}
		if winner < 0 {
			t.Errorf("%s: no creator succeeded", name)
			continue
		}
		if got, err := s.GetSetting(ctx, name); err != nil || string(got) != strconv.Itoa(winner) {
			t.Errorf("%s: got %q, %v; want the winner's %d", name, got, err, winner)
		}
	}
}
