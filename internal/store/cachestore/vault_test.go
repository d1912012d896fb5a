package cachestore_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// countingStore counts the reads that reach Vault.
type countingStore struct {
	store.Store
	deviceReads, hubReads atomic.Int64
}

func (c *countingStore) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	c.deviceReads.Add(1)
	return c.Store.GetDevice(ctx, id)
}

func (c *countingStore) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	c.hubReads.Add(1)
	return c.Store.GetHub(ctx, name)
}

// TestVaultReadsPerToken measures, against a real Vault, what each token costs in Vault
// reads: a cold start of 1,000 concurrent first requests for 100 devices (the device
// lookup and hub lookup a token needs), then steady state. These are the figures the
// DESIGN §6 key-cache bar is about; the test logs them and fails if they exceed it.
func TestVaultReadsPerToken(t *testing.T) {
	srv := vaulttest.Start(t)
	// This test counts reads, not their latency: the outage tests hold the 250 ms
	// request deadline. Under -race beside other test packages on two cores, 100
	// concurrent first reads can take longer than that, so the deadline here is wide.
	vs, err := vaultstore.New(srv.Client(t), vaultstore.Config{Prefix: "reads", RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingStore{Store: vs}
	clock := newClock()
	c, err := cachestore.New(counted, cachestore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if err := vs.CreateHub(ctx, domain.Hub{Name: "main", Kind: domain.KindIoTHub, Hostname: "h.azure-devices.net", Mode: domain.SignDeviceKey, DefaultTTL: 3600e9, MaxTTL: 3600e9}); err != nil {
		t.Fatal(err)
	}
	const devices = 100
	for i := range devices {
		d := domain.Device{ID: "dev-" + strconv.Itoa(i), Hub: "main", PrimaryKey: "AAAAAAAAAAAAAAAAAAAAAA==", SecondaryKey: "AAAAAAAAAAAAAAAAAAAAAA==", Auth: domain.Credential{Type: domain.CredHS256, Secret: []byte("s")}}
		if err := vs.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}

	// token is the store work of one GET /token: the device, then its hub.
	token := func(id string) error {
		d, err := c.GetDevice(ctx, id)
		if err != nil {
			return err
		}
		_, err = c.GetHub(ctx, d.Hub)
		return err
	}

	const burst = 1000
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	start := make(chan struct{})
	for i := range burst {
		wg.Go(func() {
			<-start
			if err := token("dev-" + strconv.Itoa(i%devices)); err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("cold burst: %v", err)
	}
	coldDevice, coldHub := counted.deviceReads.Load(), counted.hubReads.Load()
	t.Logf("cold start: %d concurrent tokens for %d devices → %d device reads, %d hub reads from Vault", burst, devices, coldDevice, coldHub)
	if coldDevice > devices || coldHub > 1 {
		t.Errorf("cold start: got %d device and %d hub reads, want ≤ %d and ≤ 1 (concurrent misses must share one read)", coldDevice, coldHub, devices)
	}

	// Steady state on the service's clock, at two request rates over the same 100
	// devices: a load test (1,000 tokens/s for 100 s) and a slow fleet (100,000 tokens
	// spread over 1 h, each device every 3.6 s). Reads then come only from entries
	// expiring after the cache TTL.
	for _, rate := range []struct {
		name string
		gap  time.Duration
	}{{"1,000 tokens/s", time.Millisecond}, {"28 tokens/s", 36 * time.Millisecond}} {
		before := counted.deviceReads.Load() + counted.hubReads.Load()
		const steady = 100_000
		for i := range steady {
			clock.Advance(rate.gap)
			if err := token("dev-" + strconv.Itoa(i%devices)); err != nil {
				t.Fatal(err)
			}
		}
		reads := counted.deviceReads.Load() + counted.hubReads.Load() - before
		perToken := float64(reads) / steady
		t.Logf("steady state at %s (cache TTL %v): %d tokens → %d Vault reads (%.4f per token)", rate.name, cachestore.DefaultTTL, steady, reads, perToken)
		if rate.gap == time.Millisecond && perToken > 0.01 {
			t.Errorf("steady state at %s: got %.4f Vault reads per token, want ≤ 0.01", rate.name, perToken)
		}
	}
}
