package registry_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// gatedStore is a real store whose CreateDevice, for the IDs in hold, waits until
// release(id) — so lines finish in another order than they were submitted — and, for
// the IDs in panics, panics instead of writing.
type gatedStore struct {
	store.Store
	mu      sync.Mutex
	hold    map[string]chan struct{}
	panics  map[string]bool
	created []string // IDs in the order their creates returned
}

func (g *gatedStore) CreateDevice(ctx context.Context, d domain.Device) error {
	g.mu.Lock()
	gate, boom := g.hold[d.ID], g.panics[d.ID]
	g.mu.Unlock()
	if boom {
		panic("gatedStore: told to panic")
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := g.Store.CreateDevice(ctx, d)
	g.mu.Lock()
	g.created = append(g.created, d.ID)
	g.mu.Unlock()
	return err
}

func (g *gatedStore) release(id string) { close(g.hold[id]) }

func (g *gatedStore) order() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.created...)
}

// bulkBackends are the real stores the batch runs on: the embedded file and, with
// TOKENSVC_VAULT_BIN, the Vault dev server (KV hub).
func bulkBackends(t *testing.T) map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"embedded": func(t *testing.T) store.Store {
			st, err := filestore.Open(filepath.Join(t.TempDir(), "db"), make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
		"vault": func(t *testing.T) store.Store {
			srv := vaulttest.Start(t) // skips without TOKENSVC_VAULT_BIN
			// The registry reads hubs with the request-path deadline; the service has the
			// key cache in front, here every create reads, on a loaded machine.
			st, err := vaultstore.New(srv.Client(t), vaultstore.Config{Prefix: "bulk", RequestTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
}

func mustBulkRegistry(t *testing.T, st store.Store) *registry.Registry {
	t.Helper()
	for _, name := range []string{"main", "other"} {
		h := domain.Hub{Name: name, Kind: domain.KindIoTHub, Hostname: name + ".azure-devices.net", Mode: domain.SignDeviceKey, CreatedAt: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
		if err := st.CreateHub(t.Context(), h); err != nil {
			t.Fatal(err)
		}
	}
	now := func() time.Time { return time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) }
	return registry.New(st, kinds.All(), now)
}

func dev(id, hub, parent string, gateway bool) domain.Device {
	return domain.Device{ID: id, Hub: hub, Auth: domain.Credential{Type: domain.CredHS256}, Parent: parent, Gateway: gateway}
}

// outcomes submits devs to a batch of workers and returns "id:result" per line, in
// input order, with "!" for a line that failed (not rejected: an error).
func outcomes(t *testing.T, r *registry.Registry, workers int, devs []domain.Device, during func()) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	b := r.NewBatch(ctx, workers)
	var pend []*registry.Pending
	for _, d := range devs {
		pend = append(pend, b.Submit(d))
	}
	if during != nil {
		during()
	}
	b.Wait()
	out := make([]string, len(devs))
	for i, p := range pend {
		_, res, err := p.Result()
		out[i] = devs[i].ID + ":" + string(res)
		if res == "" {
			out[i] += "!" + err.Error()
		}
	}
	return out
}

// TestBatchMatchesOneAfterTheOther: lines that share a device ID or a parent give the
// outcomes they would have had one after the other, though unrelated lines run at
// once and finish in another order; on both stores.
func TestBatchMatchesOneAfterTheOther(t *testing.T) {
	devs := []domain.Device{
		dev("slow", "main", "", false),          // held until "fast" has been created
		dev("child-early", "main", "gw", false), // before its gateway: refused, as in order
		dev("gw", "main", "", true),
		dev("fast", "main", "", false),
		dev("slow", "main", "", false),  // the same device again: skipped once the first is done
		dev("slow", "other", "", false), // the same ID on another hub: rejected
		dev("child-1", "main", "gw", false),
		dev("child-2", "main", "gw", false),
		dev("gw", "main", "", false), // gw again, without the gateway flag: rejected
	}
	want := "slow:created child-early:rejected gw:created fast:created slow:skipped slow:rejected child-1:created child-2:created gw:rejected"
	for name, open := range bulkBackends(t) {
		t.Run(name, func(t *testing.T) {
			seq := outcomes(t, mustBulkRegistry(t, open(t)), 1, devs, nil)
			if got := strings.Join(seq, " "); got != want {
				t.Fatalf("one after the other: got %s, want %s", got, want)
			}
			g := &gatedStore{Store: open(t), hold: map[string]chan struct{}{"slow": make(chan struct{})}}
			r := mustBulkRegistry(t, g)
			par := outcomes(t, r, 8, devs, func() {
				// "slow" (line 1) is held; "fast" (line 4) must get through meanwhile.
				deadline := time.Now().Add(30 * time.Second)
				for !contains(g.order(), "fast") {
					if time.Now().After(deadline) {
						t.Errorf("line 4 did not finish while line 1 was held: the batch is not parallel")
						break
					}
					time.Sleep(time.Millisecond)
				}
				g.release("slow")
			})
			if got := strings.Join(par, " "); got != want {
				t.Errorf("8 workers: got %s, want %s", got, want)
			}
			if o := g.order(); indexOf(o, "fast") > indexOf(o, "slow") {
				t.Errorf("creates returned in the order %v: the held line was not overtaken", o)
			}
			if c, ok := g.Store.(interface {
				Check(context.Context) (store.Report, error)
			}); ok {
				rep, err := c.Check(t.Context())
				if err != nil || len(rep.Problems) > 0 {
					t.Errorf("store check after the batch: %v %v", err, rep.Problems)
				}
			}
		})
	}
}

// TestBatchManyConcurrentCreates: a few hundred lines on 32 workers, every tenth one
// repeating an earlier ID, on both stores: each ID is created once, the repeats are
// skipped, and the store is consistent.
func TestBatchManyConcurrentCreates(t *testing.T) {
	var devs []domain.Device
	var want []string
	for i := range 300 {
		id := fmt.Sprintf("d-%03d", i)
		res := "created"
		if i%10 == 9 {
			id, res = fmt.Sprintf("d-%03d", i-1), "skipped"
		}
		devs = append(devs, dev(id, "main", "", false))
		want = append(want, id+":"+res)
	}
	for name, open := range bulkBackends(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			got := outcomes(t, mustBulkRegistry(t, st), 32, devs, nil)
			if g, w := strings.Join(got, " "), strings.Join(want, " "); g != w {
				t.Errorf("got  %s\nwant %s", g, w)
			}
			page, err := st.ListDevices(t.Context(), "", 1000)
			if err != nil || len(page.Devices) != 270 {
				t.Errorf("devices stored: got %d %v, want 270", len(page.Devices), err)
			}
		})
	}
}

// TestBatchPanicFailsItsLineOnly: a line whose import panics fails alone, with
// ErrImportPanicked; the lines around it are imported.
func TestBatchPanicFailsItsLineOnly(t *testing.T) {
	_, st := mustRegistry(t)
	g := &gatedStore{Store: st, panics: map[string]bool{"boom": true}}
	r := registry.New(g, kinds.All(), nil)
	b := r.NewBatch(t.Context(), 4)
	ps := []*registry.Pending{b.Submit(dev("a", "main", "", false)), b.Submit(dev("boom", "main", "", false)), b.Submit(dev("c", "main", "", false))}
	b.Wait()
	for i, want := range []registry.ImportResult{registry.Imported, "", registry.Imported} {
		_, got, err := ps[i].Result()
		if got != want || (want == "") != errors.Is(err, registry.ErrImportPanicked) {
			t.Errorf("line %d: got %q %v, want %q", i+1, got, err, want)
		}
	}
}

func contains(s []string, v string) bool { return indexOf(s, v) >= 0 }

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
