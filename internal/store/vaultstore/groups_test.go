package vaultstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// writeGate holds Vault requests that match, once armed, until release is called: at most
// limit of them (0: all), the later ones pass. It lets a test stop creates at a chosen
// step of their write order while another replica acts.
type writeGate struct {
	next    http.RoundTripper
	match   func(*http.Request) bool
	limit   int64
	armed   atomic.Bool
	held    atomic.Int64
	open    chan struct{}
	release func()
}

func newWriteGate(next http.RoundTripper, limit int64, match func(*http.Request) bool) *writeGate {
	g := &writeGate{next: next, match: match, limit: limit, open: make(chan struct{})}
	g.release = sync.OnceFunc(func() { close(g.open) })
	return g
}

func (g *writeGate) RoundTrip(r *http.Request) (*http.Response, error) {
	if g.armed.Load() && g.match(r) {
		if n := g.held.Add(1); g.limit == 0 || n <= g.limit {
			<-g.open
		}
	}
	return g.next.RoundTrip(r)
}

// gatedStore opens a store on srv (root token, prefix) whose requests pass through a
// gate matching writes under rel (relative to the prefix), and counts them all.
func gatedWriteStore(t *testing.T, srv *vaulttest.Server, prefix, rel string, limit int64) (*vaultstore.Store, *writeGate, *countingTransport) {
	t.Helper()
	var (
		count *countingTransport
		g     *writeGate
	)
	c := srv.ClientThrough(t, func(next http.RoundTripper) http.RoundTripper {
		count = &countingTransport{next: next}
		g = newWriteGate(count, limit, func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/data/"+prefix+"/"+rel)
		})
		return g
	})
	s := mustStoreWith(t, c, vaultstore.Config{Prefix: prefix, WriteTimeout: 30 * time.Second})
	t.Cleanup(func() { _ = s.Close() })
	t.Cleanup(g.release) // first
	return s, g, count
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// createAll creates the devices concurrently and returns each create's error.
func createAll(ctx context.Context, s *vaultstore.Store, devs []domain.Device) []error {
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Go(func() { errs[i] = s.CreateDevice(ctx, d) })
	}
	wg.Wait()
	return errs
}

// markers returns the entries of hub's marker folder: single markers by device ID,
// group markers by name with the IDs they hold.
func markers(t *testing.T, c *vault.Client, prefix, hub string) (single []string, groups map[string][]string) {
	t.Helper()
	groups = map[string][]string{}
	for path, data := range dumpKV(t, c, "secret", prefix) {
		entry, ok := strings.CutPrefix(path, prefix+"/hubdevices/"+hexOf(hub)+"/")
		if !ok {
			continue
		}
		if !strings.HasPrefix(entry, "g") {
			single = append(single, entry)
			continue
		}
		var g struct{ Devices []string }
		if err := json.Unmarshal([]byte(data), &g); err != nil {
			t.Fatal(err)
		}
		groups[entry] = g.Devices
	}
	return single, groups
}

// markerGroup reads the group marker a device record names, straight from Vault.
func markerGroup(t *testing.T, c *vault.Client, prefix, id string) string {
	t.Helper()
	sec, err := c.Logical().Read("secret/data/" + prefix + "/devices/" + hexOf(id))
	if err != nil || sec == nil {
		t.Fatalf("read device %s: %v %v", id, sec, err)
	}
	g, _ := sec.Data["data"].(map[string]any)["markerGroup"].(string)
	return g
}

func checkClean(t *testing.T, s *vaultstore.Store) {
	t.Helper()
	rep, err := s.Check(t.Context())
	if err != nil || len(rep.Problems) > 0 || len(rep.Leftovers) > 0 {
		t.Errorf("check: %v problems %v leftovers %v", err, rep.Problems, rep.Leftovers)
	}
}

// TestGroupMarkers: creates on one hub that arrive while a marker write is in flight
// share one group marker naming all of them, written before their records, each record
// naming its group; the hub cannot be deleted while they exist; a move and deletes
// take their names out of the group, the last one deletes it, and then the hub goes.
func TestGroupMarkers(t *testing.T) {
	srv := vaulttest.Start(t)
	vaultstore.SetHubSeenTTL(t, time.Minute)
	prefix := freshPrefix()
	s, g, count := gatedWriteStore(t, srv, prefix, "hubdevices/", 1) // holds the first marker write
	c := srv.Client(t)
	mustCreateHub(t, s, iotHub("main", false))
	mustCreateHub(t, s, iotHub("other", false))
	mustCreateDevice(t, s, keyedDevice("warm-up", "main")) // the hub read before a create is reused now
	if err := s.DeleteDevice(t.Context(), "warm-up"); err != nil {
		t.Fatal(err)
	}

	// Hold the first marker write of main so that the 31 other creates queue behind it.
	var devs []domain.Device
	for i := range 32 {
		devs = append(devs, keyedDevice(fmt.Sprintf("d%02d", i), "main"))
	}
	count.n.Store(0)
	for i, err := range queueGrouped(t, s, g, "main", devs) {
		if err != nil {
			t.Errorf("create %s: %v", devs[i].ID, err)
		}
	}
	perDevice := float64(count.n.Load()) / 32
	single, groups := markers(t, c, prefix, "main")
	if len(single) != 1 || len(groups) != 1 {
		t.Fatalf("markers of main: got %d single and %d groups, want 1 and 1", len(single), len(groups))
	}
	var group string
	for name, ids := range groups {
		group = name
		if len(ids) != 31 {
			t.Errorf("group %s names %d devices, want 31", name, len(ids))
		}
		for _, id := range ids {
			if got := markerGroup(t, c, prefix, id); got != name {
				t.Errorf("device %s names group %q, want %q", id, got, name)
			}
		}
	}
	if perDevice >= 1.5 {
		// A marker of its own would make it 2 or more (marker, record, shared hub read).
		t.Errorf("got %.2f Vault calls per device, want about one (the record) plus shared ones", perDevice)
	}
	t.Logf("32 concurrent creates: %.2f Vault calls per device", perDevice)
	checkClean(t, s)
	if err := s.DeleteHub(t.Context(), "main"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("DeleteHub with 32 devices marked mostly by a group: got %v, want ErrConflict", err)
	}

	// A grouped device moves: its name leaves the group, the new hub has its marker.
	grouped := groups[group][0]
	if _, err := s.UpdateDevice(t.Context(), grouped, func(d *domain.Device) error { d.Hub = "other"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, groups := markers(t, c, prefix, "main"); len(groups[group]) != 30 {
		t.Errorf("after a move the group names %d devices, want 30", len(groups[group]))
	}
	if got := markerGroup(t, c, prefix, grouped); got != "" {
		t.Errorf("the moved device names group %q, want none (a single marker)", got)
	}
	checkClean(t, s)

	// Concurrent deletes share the group's rewrites; the last one deletes it.
	var wg sync.WaitGroup
	for _, d := range devs {
		if d.ID == grouped {
			continue
		}
		wg.Go(func() {
			if err := s.DeleteDevice(t.Context(), d.ID); err != nil {
				t.Errorf("delete %s: %v", d.ID, err)
			}
		})
	}
	wg.Wait()
	if single, groups := markers(t, c, prefix, "main"); len(single)+len(groups) > 0 {
		t.Errorf("markers of main after every device went: %q %v, want none", single, groups)
	}
	checkClean(t, s)
	if err := s.DeleteHub(t.Context(), "main"); err != nil {
		t.Errorf("DeleteHub of the emptied hub: %v", err)
	}
}

// queueGrouped creates devs concurrently on s with the first marker write held until
// all the others wait behind it, so they share one group marker; it returns each
// create's error.
func queueGrouped(t *testing.T, s *vaultstore.Store, g *writeGate, hub string, devs []domain.Device) []error {
	t.Helper()
	done := startHeld(t, s, g, hub, devs)
	g.release()
	return <-done
}

// startHeld starts the creates of devs on s, the first alone and held by g at its
// marker write, the others once it is, and returns when they all wait behind it.
func startHeld(t *testing.T, s *vaultstore.Store, g *writeGate, hub string, devs []domain.Device) <-chan []error {
	t.Helper()
	g.armed.Store(true)
	first := make(chan error, 1)
	go func() { first <- s.CreateDevice(t.Context(), devs[0]) }()
	waitFor(t, "the first marker write held", func() bool { return g.held.Load() == 1 })
	done := make(chan []error, 1)
	go func() {
		rest := createAll(t.Context(), s, devs[1:])
		done <- append([]error{<-first}, rest...)
	}()
	waitFor(t, "creates queued behind the first marker write", func() bool { return s.PendingMarkers(hub) == len(devs)-1 })
	return done
}

// TestGroupMemberFailsAlone: in one group, a create of an ID taken on another hub and
// a second create of an ID the group already holds fail on their own (ErrExists); the
// others are created, the taken device is untouched, and no marker entry is left
// behind, before or after the duplicated device is deleted.
func TestGroupMemberFailsAlone(t *testing.T) {
	srv := vaulttest.Start(t)
	vaultstore.SetHubSeenTTL(t, time.Minute)
	prefix := freshPrefix()
	s, g, _ := gatedWriteStore(t, srv, prefix, "hubdevices/", 1)
	c := srv.Client(t)
	mustCreateHub(t, s, iotHub("main", false))
	mustCreateHub(t, s, iotHub("other", false))
	mustCreateDevice(t, s, keyedDevice("taken", "other"))
	mustCreateDevice(t, s, keyedDevice("warm-up", "main"))

	devs := []domain.Device{keyedDevice("first", "main")}
	for i := range 20 {
		devs = append(devs, keyedDevice(fmt.Sprintf("n%02d", i), "main"))
	}
	devs = append(devs, keyedDevice("taken", "main"), keyedDevice("dup", "main"), keyedDevice("dup", "main"))
	errs := queueGrouped(t, s, g, "main", devs)
	dupOK := 0
	for i, err := range errs {
		id := devs[i].ID
		switch {
		case id == "taken" && !errors.Is(err, store.ErrExists):
			t.Errorf("taken: got %v, want ErrExists", err)
		case id == "dup" && err == nil:
			dupOK++
		case id == "dup" && !errors.Is(err, store.ErrExists):
			t.Errorf("the second dup: got %v, want ErrExists", err)
		case id != "taken" && id != "dup" && err != nil:
			t.Errorf("create %s: %v", id, err)
		}
	}
	if dupOK != 1 {
		t.Errorf("dup created %d times, want once", dupOK)
	}
	if d, err := s.GetDevice(t.Context(), "taken"); err != nil || d.Hub != "other" {
		t.Errorf("taken after the refused create: %v %v, want it on other", d.Hub, err)
	}
	_, groups := markers(t, c, prefix, "main")
	if len(groups) != 1 {
		t.Fatalf("got %d group markers on main, want 1", len(groups))
	}
	for _, ids := range groups {
		for _, id := range ids {
			if id == "taken" {
				t.Errorf("the group still names the refused device")
			}
		}
	}
	checkClean(t, s)
	if err := s.DeleteDevice(t.Context(), "dup"); err != nil {
		t.Fatal(err)
	}
	checkClean(t, s)
}

// TestDeleteHubRacingGroupedCreates: replica B deletes a hub while replica A's grouped
// creates on it are stopped before their records are written, or before their marker
// is: the delete goes through (no record uses the hub yet), every create then fails
// with ErrNotFound and rolls back, and nothing is left: no device on the deleted hub,
// no marker, no problem.
func TestDeleteHubRacingGroupedCreates(t *testing.T) {
	srv := vaulttest.Start(t)
	vaultstore.SetHubSeenTTL(t, time.Minute) // A decides on its earlier read of the hub
	for _, step := range []struct {
		name, rel string
		limit     int64
	}{
		{"records held", "devices/", 0},
		{"marker write held", "hubdevices/", 1},
	} {
		t.Run(step.name, func(t *testing.T) {
			prefix := freshPrefix()
			a, g, _ := gatedWriteStore(t, srv, prefix, step.rel, step.limit)
			b := mustStoreWith(t, srv.Client(t), vaultstore.Config{Prefix: prefix})
			mustCreateHub(t, a, iotHub("h", false))
			mustCreateDevice(t, a, keyedDevice("warm-up", "h"))
			if err := a.DeleteDevice(t.Context(), "warm-up"); err != nil {
				t.Fatal(err)
			}
			var devs []domain.Device
			for i := range 24 {
				devs = append(devs, keyedDevice(fmt.Sprintf("r%02d", i), "h"))
			}
			var done <-chan []error
			if step.limit == 0 {
				g.armed.Store(true)
				ch := make(chan []error, 1)
				go func() { ch <- createAll(t.Context(), a, devs) }()
				waitFor(t, "every record write held", func() bool { return g.held.Load() == int64(len(devs)) })
				done = ch
			} else {
				done = startHeld(t, a, g, "h", devs)
			}
			if err := b.DeleteHub(t.Context(), "h"); err != nil {
				t.Fatalf("DeleteHub while no record is written yet: %v", err)
			}
			g.release()
			for i, err := range <-done {
				if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("create %s on the deleted hub: got %v, want ErrNotFound", devs[i].ID, err)
				}
			}
			page, err := b.ListDevices(t.Context(), "", 1000)
			if err != nil || len(page.Devices) > 0 {
				t.Errorf("devices left: %v %v, want none", len(page.Devices), err)
			}
			if single, groups := markers(t, srv.Client(t), prefix, "h"); len(single)+len(groups) > 0 {
				t.Errorf("markers left on the deleted hub: %q %v", single, groups)
			}
			checkClean(t, b)
		})
	}
}

// TestDeleteHubRacingCreates runs creates on a hub from 16 goroutines of one replica
// while another replica keeps deleting the hub's devices and the hub until the hub is
// gone: whatever the interleaving, no device is left on the deleted hub and Check finds
// no problem.
func TestDeleteHubRacingCreates(t *testing.T) {
	srv := vaulttest.Start(t)
	cfg := vaultstore.Config{Prefix: freshPrefix(), RequestTimeout: 5 * time.Second}
	a := mustStoreWith(t, srv.Client(t), cfg)
	b := mustStoreWith(t, srv.Client(t), cfg)
	mustCreateHub(t, a, iotHub("h", false))
	var created, refused, started atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 25 {
				err := a.CreateDevice(t.Context(), keyedDevice(fmt.Sprintf("w%02d-%02d", w, i), "h"))
				started.Add(1)
				switch {
				case err == nil:
					created.Add(1)
				case errors.Is(err, store.ErrNotFound):
					refused.Add(1)
				default:
					t.Errorf("create: %v", err)
				}
			}
		})
	}
	waitFor(t, "some creates", func() bool { return started.Load() >= 48 })
	rounds := 0
	for ; ; rounds++ {
		err := b.DeleteHub(t.Context(), "h")
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("DeleteHub: %v", err)
		}
		page, err := b.ListDevices(t.Context(), "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.Devices {
			if err := b.DeleteDevice(t.Context(), d.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
		}
	}
	deletedAt := started.Load()
	wg.Wait()
	page, err := b.ListDevices(t.Context(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range page.Devices {
		t.Errorf("device %s outlived its deleted hub %s", d.ID, d.Hub)
	}
	rep, err := b.Check(t.Context())
	if err != nil || len(rep.Problems) > 0 {
		t.Errorf("check: %v %v", err, rep.Problems)
	}
	t.Logf("hub deleted after %d delete rounds with %d of 400 creates done; created %d, refused (hub gone) %d; leftovers %d",
		rounds, deletedAt, created.Load(), refused.Load(), len(rep.Leftovers))
}
