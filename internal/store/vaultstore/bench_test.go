package vaultstore_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// BenchmarkGetDevice is the request path's store read: one KV v2 read of a device.
func BenchmarkGetDevice(b *testing.B) {
	srv := vaulttest.Start(b)
	s := mustStore(b, srv)
	mustCreateHub(b, s, iotHub("hub-a", false))
	mustCreateDevice(b, s, keyedDevice("sensor-0001", "hub-a", "mod-a"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetDevice(ctx, "sensor-0001"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransitHMAC is the signing call of a token whose key is in Transit.
func BenchmarkTransitHMAC(b *testing.B) {
	srv := vaulttest.Start(b)
	s := mustStore(b, srv)
	hub := iotHub("hub-t", true)
	mustCreateHub(b, s, hub)
	mustCreateDevice(b, s, keyedDevice("sensor-0001", "hub-t"))
	ctx := context.Background()
	msg := []byte("contoso-hub.azure-devices.net%2Fdevices%2Fsensor-0001\n1767226600")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.HMAC(ctx, hub, "sensor-0001", "", msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListDevices measures one page of 100 with a fleet of 5,000 devices
// (TOKENSVC_BENCH_DEVICES sets another size; 100000 takes minutes to set up): the first
// page (a fresh LIST of the whole devices folder, a binary search, 100 record reads), a
// later page (the reused listing and 100 reads), and the LIST alone.
func BenchmarkListDevices(b *testing.B) {
	n := 5000
	if v := os.Getenv("TOKENSVC_BENCH_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 200 {
			b.Fatalf("TOKENSVC_BENCH_DEVICES=%q: want a number >= 200", v)
		}
	}
	srv := vaulttest.Start(b)
	c := srv.Client(b)
	s := mustStore(b, srv)
	mustCreateHub(b, s, iotHub("hub-a", false))
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			return s.CreateDevice(ctx, keyedDevice(fmt.Sprintf("dev-%06d", i), "hub-a"))
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("create %d devices: %v", n, err)
	}

	pages := []struct {
		name, cursor string
	}{
		{"first page", ""},
		{"later page", fmt.Sprintf("dev-%06d", n/2)},
	}
	for _, p := range pages {
		b.Run(fmt.Sprintf("%s of %d", p.name, n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				page, err := s.ListDevices(context.Background(), p.cursor, 100)
				if err != nil {
					b.Fatal(err)
				}
				if len(page.Devices) != 100 || page.Next == "" {
					b.Fatalf("got %d devices, Next %q, want 100 and a cursor", len(page.Devices), page.Next)
				}
			}
		})
	}
	b.Run(fmt.Sprintf("LIST only of %d", n), func(b *testing.B) {
		path := "secret/metadata/" + s.Config().Prefix + "/devices/"
		for b.Loop() {
			sec, err := c.Logical().List(path)
			if err != nil || sec == nil {
				b.Fatal(err)
			}
			if got := len(sec.Data["keys"].([]any)); got != n {
				b.Fatalf("LIST: got %d keys, want %d", got, n)
			}
		}
	})
}

// BenchmarkTransitHMACConcurrent is BenchmarkTransitHMAC from 32 goroutines at once,
// one Transit key (a hub signing with its policy key has one for all its devices):
// each call of its own (single), then coalesced into batch_input calls (batched). It
// reports Vault calls per HMAC; compare ns/op of the two in the same run.
func BenchmarkTransitHMACConcurrent(b *testing.B) {
	srv := vaulttest.Start(b)
	makeWrappingKey(b, srv)
	prefix := freshPrefix()
	hub := iotHub("hub-t", true)
	msg := []byte("contoso-hub.azure-devices.net%2Fdevices%2Fsensor-0001\n1767226600")
	setup := mustStoreWith(b, srv.Client(b), vaultstore.Config{Prefix: prefix})
	mustCreateHub(b, setup, hub)
	mustCreateDevice(b, setup, keyedDevice("sensor-0001", "hub-t"))
	for _, c := range []struct {
		name string
		max  int
	}{{"single", 0}, {"batched", vaultstore.DefaultTransitBatchMax}} {
		b.Run(c.name, func(b *testing.B) {
			s, g := gatedStore(b, srv, prefix, c.max)
			b.ReportAllocs()
			b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.HMAC(context.Background(), hub, "sensor-0001", "", msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(len(g.calls()))/float64(b.N), "vault-calls/op")
		})
	}
}
