package vaultstore_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	for _, p := range []string{"claims/devices/" + hexOf("dev-new"), "claims/hubs/" + hexOf("hub-new")} {
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

// roundTripFunc is an http.RoundTripper in a function, for Vault clients whose calls a
// test sees or fails.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestInterruptedDeleteRecreatedMeanwhile: others act on the name while a takeover
// runs. Versions restart at 1 when a record is deleted in full, so a check-and-set on
// the version the metadata named can succeed over a record created anew; and a name
// deleted after the takeover's write may already be someone else's. Either way the
// takeover must not report success, and must not leave a live record replaced.
func TestInterruptedDeleteRecreatedMeanwhile(t *testing.T) {
	for _, tt := range []struct {
		name string
		// when: the request after whose answer the other party acts: "check" (the
		// takeover's read of version 1) or "write" (its write).
		when      string
		recreate  bool
		wantValue string // "" for none
	}{
		{"deleted and created anew before the write", "check", true, "theirs"},
		{"deleted after the write", "write", false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := vaulttest.Start(t)
			srv.MountKV(t, "halfaba")
			root, prefix := srv.Client(t), freshPrefix()
			setup := mustStoreWith(t, root, vaultstore.Config{Mount: "halfaba", Prefix: prefix})
			ctx := t.Context()
			if err := setup.CreateSetting(ctx, "k", []byte("old")); err != nil {
				t.Fatal(err)
			}
			srv.DropVersionData(t, "halfaba") // "k" is half-deleted at version 1
			rel := prefix + "/settings/" + hexOf("k")
			var checked, acted atomic.Bool
			c := srv.ClientThrough(t, func(next http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(r *http.Request) (*http.Response, error) {
					resp, err := next.RoundTrip(r)
					if !strings.HasSuffix(r.URL.Path, "/halfaba/data/"+rel) {
						return resp, err
					}
					isCheck := r.Method == http.MethodGet && r.URL.Query().Get("version") == "1"
					if isCheck {
						checked.Store(true)
					}
					at := isCheck
					if tt.when == "write" {
						at = r.Method != http.MethodGet && checked.Load()
					}
					if at && acted.CompareAndSwap(false, true) {
						if err := root.KVv2("halfaba").DeleteMetadata(ctx, rel); err != nil {
							t.Error(err)
						}
						if tt.recreate {
							if _, err := root.KVv2("halfaba").Put(ctx, rel, map[string]any{"value": base64.StdEncoding.EncodeToString([]byte("theirs"))}); err != nil {
								t.Error(err)
							}
						}
					}
					return resp, err
				})
			})
			s := mustStoreWith(t, c, vaultstore.Config{Mount: "halfaba", Prefix: prefix})
			if err := s.CreateSetting(ctx, "k", []byte("mine")); !errors.Is(err, store.ErrExists) {
				t.Errorf("CreateSetting: got %v, want ErrExists", err)
			}
			if !acted.Load() {
				t.Fatal("the other party never acted: the takeover's requests were not seen")
			}
			got, err := s.GetSetting(ctx, "k")
			switch {
			case tt.wantValue == "" && !errors.Is(err, store.ErrNotFound):
				t.Errorf("GetSetting: got %q, %v; want ErrNotFound", got, err)
			case tt.wantValue != "" && (err != nil || string(got) != tt.wantValue):
				t.Errorf("GetSetting: got %q, %v; want the other creator's %q", got, err, tt.wantValue)
			}
			if tt.recreate {
				// Our version is destroyed: no trace of "mine" is readable.
				sec, err := root.KVv2("halfaba").GetVersion(ctx, rel, 2)
				if err == nil && sec != nil && sec.Data != nil {
					t.Errorf("the takeover's version 2 is still readable: %v", sec.Data)
				}
			}
		})
	}
}

// TestInterruptedDeleteProbeFails: when a takeover cannot read what it must check
// (Vault unavailable for the metadata read), the create fails as unavailable, not as
// "exists", and it is known not to have written: a Transit device's create rolls its
// imported keys back.
func TestInterruptedDeleteProbeFails(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.MountKV(t, "halfprobe")
	root, prefix := srv.Client(t), freshPrefix()
	setup := mustStoreWith(t, root, vaultstore.Config{Mount: "halfprobe", Prefix: prefix})
	mustCreateHub(t, setup, iotHub("hub-t", true))
	mustCreateDevice(t, setup, keyedDevice("dev-t", "hub-t"))
	ctx := t.Context()
	if err := setup.CreateSetting(ctx, "k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	srv.DropVersionData(t, "halfprobe")
	mustCreateHub(t, setup, iotHub("hub-t", true)) // taken over: only the device and the setting stay half-deleted
	var failMeta atomic.Bool
	failMeta.Store(true)
	c := srv.ClientThrough(t, func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if failMeta.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/halfprobe/metadata/") && r.URL.Query().Get("list") == "" {
				return &http.Response{StatusCode: http.StatusServiceUnavailable, Body: io.NopCloser(strings.NewReader(`{"errors":["sealed"]}`)),
					Header: http.Header{"Content-Type": {"application/json"}}, Request: r}, nil
			}
			return next.RoundTrip(r)
		})
	})
	s := mustStoreWith(t, c, vaultstore.Config{Mount: "halfprobe", Prefix: prefix})
	if err := s.CreateSetting(ctx, "k", []byte("w")); !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSetting: got %v, want ErrUnavailable", err)
	}
	err := s.CreateDevice(ctx, keyedDevice("dev-t", "hub-t"))
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("CreateDevice: got %v, want ErrUnavailable", err)
	}
	for _, slot := range []string{"primary", "secondary"} {
		if name := s.DeviceKeyName("dev-t", "", slot); transitKeyExists(t, root, name) {
			t.Errorf("Transit key %s outlived a create that surely did not write its record", name)
		}
	}
	failMeta.Store(false)
	if err := s.CreateDevice(ctx, keyedDevice("dev-t", "hub-t")); err != nil {
		t.Errorf("CreateDevice once Vault answers: %v", err)
	}
}
