package vaultstore_test

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestCreateDeviceOnAHubChangedByAnotherReplica: replica A has just read hub h (the
// read it may reuse for a second before a create); replica B then deletes h, or
// deletes and re-creates it as another hub of the same name. A's next create must not
// leave a device behind on the hub that went away (ErrNotFound) or on the new hub it
// did not decide on (ErrConflict), and the store stays consistent.
func TestCreateDeviceOnAHubChangedByAnotherReplica(t *testing.T) {
	srv := vaulttest.Start(t)
	vaultstore.SetHubSeenTTL(t, time.Minute) // A reuses its read however slow the machine
	cfg := vaultstore.Config{Prefix: freshPrefix(), RequestTimeout: 5 * time.Second}
	a := mustStoreWith(t, srv.Client(t), cfg)
	b := mustStoreWith(t, srv.Client(t), cfg)
	ctx := t.Context()
	tests := []struct {
		name     string
		recreate bool
		want     error
	}{
		{"deleted", false, store.ErrNotFound},
		{"deleted and re-created", true, store.ErrConflict},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := iotHub(fmt.Sprintf("h%d", i), false)
			mustCreateHub(t, a, hub)
			mustCreateDevice(t, a, keyedDevice(fmt.Sprintf("first-%d", i), hub.Name)) // A has read h now
			if err := b.DeleteDevice(ctx, fmt.Sprintf("first-%d", i)); err != nil {
				t.Fatal(err)
			}
			if err := b.DeleteHub(ctx, hub.Name); err != nil {
				t.Fatal(err)
			}
			if tt.recreate {
				hub.CreatedAt = hub.CreatedAt.Add(time.Hour)
				mustCreateHub(t, b, hub)
			}
			id := fmt.Sprintf("second-%d", i)
			err := a.CreateDevice(ctx, keyedDevice(id, hub.Name))
			if !errors.Is(err, tt.want) {
				t.Fatalf("create: got %v, want %v", err, tt.want)
			}
			if _, err := b.GetDevice(ctx, id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refused device: got %v, want ErrNotFound", err)
			}
			if rep, err := b.Check(ctx); err != nil || len(rep.Problems) > 0 {
				t.Errorf("check: %v %v", err, rep.Problems)
			}
		})
	}
}

// TestConcurrentCreatesOnOneHub: many concurrent creates on one hub (sharing the hub
// read after their writes) all succeed, each exactly once, and a create of a taken ID
// is ErrExists without a read before it, leaving the existing device and its marker.
func TestConcurrentCreatesOnOneHub(t *testing.T) {
	srv := vaulttest.Start(t)
	s := mustStoreWith(t, srv.Client(t), vaultstore.Config{Prefix: freshPrefix()})
	mustCreateHub(t, s, iotHub("main", false))
	mustCreateHub(t, s, iotHub("other", false))
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := range errs {
		wg.Go(func() { errs[i] = s.CreateDevice(t.Context(), keyedDevice(fmt.Sprintf("d%02d", i/2), "main")) })
	}
	wg.Wait()
	created := map[string]int{}
	for i, err := range errs {
		id := fmt.Sprintf("d%02d", i/2)
		switch {
		case err == nil:
			created[id]++
		case !errors.Is(err, store.ErrExists):
			t.Errorf("create %s: got %v, want nil or ErrExists", id, err)
		}
	}
	for i := range 32 {
		if id := fmt.Sprintf("d%02d", i); created[id] != 1 {
			t.Errorf("%s created %d times, want once", id, created[id])
		}
	}
	if err := s.CreateDevice(t.Context(), keyedDevice("d00", "other")); !errors.Is(err, store.ErrExists) {
		t.Errorf("a taken ID on another hub: got %v, want ErrExists", err)
	}
	if d, err := s.GetDevice(t.Context(), "d00"); err != nil || d.Hub != "main" {
		t.Errorf("d00 after the refused create: got %v %v, want it on main", d.Hub, err)
	}
	rep, err := s.Check(t.Context())
	if err != nil || len(rep.Problems) > 0 || len(rep.Leftovers) > 0 {
		t.Errorf("check: %v problems %v leftovers %v", err, rep.Problems, rep.Leftovers)
	}
}

// countingTransport counts the requests sent to Vault.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// TestCreateDeviceVaultCalls counts the Vault calls of creating devices on a KV hub:
// three one at a time (marker, record, the hub read after them; the hub read before
// is reused), and fewer under concurrency, where the read after is shared.
func TestCreateDeviceVaultCalls(t *testing.T) {
	srv := vaulttest.Start(t)
	vaultstore.SetHubSeenTTL(t, time.Minute) // the reuse must not depend on the machine's speed
	var count *countingTransport
	c := srv.ClientThrough(t, func(next http.RoundTripper) http.RoundTripper {
		count = &countingTransport{next: next}
		return count
	})
	s := mustStoreWith(t, c, vaultstore.Config{Prefix: freshPrefix()})
	mustCreateHub(t, s, iotHub("main", false))
	mustCreateDevice(t, s, keyedDevice("warm", "main"))

	count.n.Store(0)
	const one = 20
	for i := range one {
		mustCreateDevice(t, s, keyedDevice(fmt.Sprintf("seq-%02d", i), "main"))
	}
	if got := float64(count.n.Load()) / one; got != 3 {
		t.Errorf("one at a time: got %.2f Vault calls per device, want 3", got)
	}

	count.n.Store(0)
	const many = 200
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range many {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			mustCreateDevice(t, s, keyedDevice(fmt.Sprintf("par-%03d", i), "main"))
		})
	}
	wg.Wait()
	got := float64(count.n.Load()) / many
	if got > 3 {
		t.Errorf("32 at a time: got %.2f Vault calls per device, want at most 3", got)
	}
	t.Logf("Vault calls per created device: %.2f one at a time, %.2f with 32 at a time", 3.0, got)
}
