package vaultstore_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// checkFixture is a store holding a KV hub, a Transit hub keeping device keys, a
// Transit hub with a policy key, and a device on each device-key hub (the Transit one
// with a module), plus the root client to damage it with behind the store's back.
type checkFixture struct {
	s      *vaultstore.Store
	c      *vault.Client
	prefix string
}

func newCheckFixture(t *testing.T, srv *vaulttest.Server) *checkFixture {
	t.Helper()
	f := &checkFixture{}
	f.s, f.c, f.prefix = rootStore(t, srv)
	mustCreateHub(t, f.s, iotHub("hub-kv", false))
	mustCreateHub(t, f.s, iotHub("hub-t", true))
	mustCreateHub(t, f.s, domain.Hub{Name: "hub-p", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "d", PolicyKey: testKey("p"), Transit: true})
	mustCreateDevice(t, f.s, keyedDevice("dev-kv", "hub-kv"))
	mustCreateDevice(t, f.s, keyedDevice("dev-t", "hub-t", "m1"))
	if err := f.s.PutSetting(t.Context(), "admin", []byte("x")); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *checkFixture) path(rel string) string { return "secret/data/" + f.prefix + "/" + rel }

func hexOf(s string) string { return fmt.Sprintf("%x", s) }

// edit rewrites the record at rel with fn applied to its data, as a torn or foreign
// write would leave it.
func (f *checkFixture) edit(t *testing.T, rel string, fn func(map[string]any)) {
	t.Helper()
	sec, err := f.c.Logical().Read(f.path(rel))
	if err != nil || sec == nil {
		t.Fatalf("read %s: %v %v", rel, sec, err)
	}
	data := sec.Data["data"].(map[string]any)
	fn(data)
	f.write(t, rel, data)
}

func (f *checkFixture) write(t *testing.T, rel string, data map[string]any) {
	t.Helper()
	if _, err := f.c.Logical().Write(f.path(rel), map[string]any{"data": data}); err != nil {
		t.Fatalf("write %s: %v", rel, err)
	}
}

func (f *checkFixture) remove(t *testing.T, rel string) {
	t.Helper()
	if _, err := f.c.Logical().Delete("secret/metadata/" + f.prefix + "/" + rel); err != nil {
		t.Fatalf("delete %s: %v", rel, err)
	}
}

func (f *checkFixture) removeTransitKey(t *testing.T, name string) {
	t.Helper()
	if _, err := f.c.Logical().Write("transit/keys/"+name+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Logical().Delete("transit/keys/" + name); err != nil {
		t.Fatal(err)
	}
}

// TestCheck damages a store through Vault's API the ways a broken write order, a
// foreign writer or an operator could, and wants Check to name each problem; what an
// interrupted operation may leave by design must come back as a leftover, not a
// problem.
func TestCheck(t *testing.T) {
	srv := vaulttest.Start(t)
	tests := []struct {
		name   string
		damage func(t *testing.T, f *checkFixture)
		// wantProblems are substrings, each of some problem; wantLeftovers are
		// "kind name" of every leftover, sorted.
		wantProblems  []string
		wantLeftovers []string
	}{
		{"clean", func(*testing.T, *checkFixture) {}, nil, nil},
		{"device record without its marker", func(t *testing.T, f *checkFixture) {
			f.remove(t, "hubdevices/"+hexOf("hub-kv")+"/"+hexOf("dev-kv"))
		}, []string{`device "dev-kv": hub "hub-kv" has no marker for it`}, nil},
		{"device whose hub is gone", func(t *testing.T, f *checkFixture) {
			f.remove(t, "hubs/"+hexOf("hub-kv"))
		}, []string{`device "dev-kv": its hub "hub-kv" does not exist`}, nil},
		{"device whose Transit key is gone", func(t *testing.T, f *checkFixture) {
			f.removeTransitKey(t, f.s.DeviceKeyName("dev-t", "m1", "primary"))
		}, []string{`device "dev-t": its Transit key ` + "%s" + ` does not exist`}, nil},
		{"device record written without its key names", func(t *testing.T, f *checkFixture) {
			f.edit(t, "devices/"+hexOf("dev-t"), func(d map[string]any) { delete(d, "transitKeys") })
		}, []string{`device "dev-t": its record names no primary Transit key for the device`, `for module "m1"`},
			[]string{"key " + "%d-p", "key " + "%d-s", "key " + "%m1-p", "key " + "%m1-s"}},
		{"device record naming another device's key", func(t *testing.T, f *checkFixture) {
			f.edit(t, "devices/"+hexOf("dev-t"), func(d map[string]any) {
				d["transitKeys"] = append(d["transitKeys"].([]any), f.s.DeviceKeyName("someone", "", "primary"))
			})
		}, []string{`which is not one of its own`}, nil},
		{"key material in a Transit device's record", func(t *testing.T, f *checkFixture) {
			f.edit(t, "devices/"+hexOf("dev-t"), func(d map[string]any) { d["primaryKey"] = testKey("leak") })
		}, []string{`device "dev-t": its keys are in Transit, yet its record holds key material`}, nil},
		{"Transit key names on a KV device", func(t *testing.T, f *checkFixture) {
			f.edit(t, "devices/"+hexOf("dev-kv"), func(d map[string]any) { d["transitKeys"] = []string{"x"} })
		}, []string{`device "dev-kv": names 1 Transit keys, but hub "hub-kv" keeps no device keys in Transit`}, nil},
		{"record filed under another name", func(t *testing.T, f *checkFixture) {
			f.edit(t, "devices/"+hexOf("dev-kv"), func(d map[string]any) { d["id"] = "dev-other" })
		}, []string{`device "dev-kv": the record names device "dev-other"`},
			[]string{"index entry dev-kv"}},
		{"record under a name the store never writes", func(t *testing.T, f *checkFixture) {
			f.write(t, "devices/NOT-HEX", map[string]any{"id": "x", "hub": "hub-kv"})
		}, []string{`record devices/NOT-HEX: its name is not one the store writes`}, nil},
		{"Transit hub whose key is gone", func(t *testing.T, f *checkFixture) {
			f.removeTransitKey(t, f.s.HubKeyName("hub-p"))
		}, []string{`hub "hub-p": its Transit key ` + "%h" + ` does not exist`}, nil},
		{"Transit hub record holding its key", func(t *testing.T, f *checkFixture) {
			f.edit(t, "hubs/"+hexOf("hub-p"), func(h map[string]any) { h["policyKey"] = testKey("leak") })
		}, []string{`hub "hub-p": keeps its keys in Transit, yet its record holds a key`}, nil},

		// What the write order allows a crash to leave: leftovers only.
		{"create killed after the marker", func(t *testing.T, f *checkFixture) {
			f.write(t, "hubdevices/"+hexOf("hub-kv")+"/"+hexOf("ghost"), map[string]any{"device": "ghost"})
		}, nil, []string{"index entry ghost"}},
		{"delete killed after the record", func(t *testing.T, f *checkFixture) {
			f.remove(t, "devices/"+hexOf("dev-t"))
		}, nil, []string{"index entry dev-t", "key " + "%d-p", "key " + "%d-s", "key " + "%m1-p", "key " + "%m1-s"}},
		{"device marked by a group marker only", func(t *testing.T, f *checkFixture) {
			f.remove(t, "hubdevices/"+hexOf("hub-kv")+"/"+hexOf("dev-kv"))
			f.write(t, "hubdevices/"+hexOf("hub-kv")+"/g"+strings.Repeat("0", 32), map[string]any{"devices": []string{"dev-kv"}})
		}, nil, nil},
		{"group marker written, its creates killed before their records", func(t *testing.T, f *checkFixture) {
			// Names of devices that never got a record, of one on another hub and of one
			// that uses the hub (not stale).
			f.write(t, "hubdevices/"+hexOf("hub-kv")+"/g"+strings.Repeat("ab", 16), map[string]any{"devices": []string{"ghost-1", "dev-kv", "dev-t", "ghost-2"}})
		}, nil, []string{"index entry dev-t", "index entry ghost-1", "index entry ghost-2"}},
		{"group marker without a device record on that hub", func(t *testing.T, f *checkFixture) {
			f.remove(t, "hubdevices/"+hexOf("hub-kv")+"/"+hexOf("dev-kv"))
			f.write(t, "hubdevices/"+hexOf("hub-t")+"/g"+strings.Repeat("1", 32), map[string]any{"devices": []string{"dev-kv"}})
		}, []string{`device "dev-kv": hub "hub-kv" has no marker for it`}, []string{"index entry dev-kv"}},
		{"marker under a name the store never writes", func(t *testing.T, f *checkFixture) {
			f.write(t, "hubdevices/"+hexOf("hub-kv")+"/g123", map[string]any{"devices": []string{"dev-kv"}})
		}, []string{`record hubdevices/` + hexOf("hub-kv") + `/g123: its name is not one the store writes`}, nil},
		{"claims left by crashes", func(t *testing.T, f *checkFixture) {
			f.write(t, "claims/devices/"+hexOf("dev-x"), map[string]any{"owner": "o", "op": "create", "claimedAt": time.Now().Add(-vaultstore.ClaimTTL - time.Second).UTC()})
			f.write(t, "claims/hubs/"+hexOf("hub-x"), map[string]any{"owner": "o", "op": "create", "claimedAt": time.Now().UTC()})
		}, nil, []string{"device claim dev-x", "hub claim hub-x"}},
		{"hub delete killed after its deleting mark", func(t *testing.T, f *checkFixture) {
			f.edit(t, "hubs/"+hexOf("hub-kv"), func(h map[string]any) { h["deletingSince"] = time.Now().Add(-time.Hour).UTC() })
		}, nil, []string{"deleting mark hub-kv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCheckFixture(t, srv)
			tt.damage(t, f)
			// Transit key names are hashes; the table spells them %d (the device's),
			// %m1 (its module's), -p/-s for the slot and %h (hub-p's).
			names := strings.NewReplacer(
				"%d-p", f.s.DeviceKeyName("dev-t", "", "primary"), "%d-s", f.s.DeviceKeyName("dev-t", "", "secondary"),
				"%m1-p", f.s.DeviceKeyName("dev-t", "m1", "primary"), "%m1-s", f.s.DeviceKeyName("dev-t", "m1", "secondary"),
				"%s", f.s.DeviceKeyName("dev-t", "m1", "primary"), "%h", f.s.HubKeyName("hub-p"))
			rep, err := f.s.Check(t.Context())
			if err != nil {
				t.Fatalf("Check: got error %v, want a report", err)
			}
			if len(rep.Unchecked) > 0 {
				t.Errorf("unchecked with the root token: got %q, want nothing", rep.Unchecked)
			}
			for _, w := range tt.wantProblems {
				w = names.Replace(w)
				if !slices.ContainsFunc(rep.Problems, func(p store.Problem) bool { return strings.Contains(p.String(), w) }) {
					t.Errorf("no problem mentions %q; got %q", w, rep.Problems)
				}
			}
			if tt.wantProblems == nil && rep.Err() != nil {
				t.Errorf("got %v, want no problems", rep.Err())
			}
			if tt.wantProblems != nil && !errors.Is(rep.Err(), store.ErrInconsistent) {
				t.Errorf("Err: got %v, want ErrInconsistent", rep.Err())
			}
			var left, want []string
			for _, l := range rep.Leftovers {
				left = append(left, string(l.Kind)+" "+l.Name)
			}
			for _, w := range tt.wantLeftovers {
				want = append(want, names.Replace(w))
			}
			slices.Sort(left)
			slices.Sort(want)
			if !slices.Equal(left, want) {
				t.Errorf("leftovers: got %q, want %q", left, want)
			}
		})
	}
}
