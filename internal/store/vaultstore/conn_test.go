package vaultstore_test

import (
	"context"
	"net/http/httptrace"
	"sync/atomic"
	"testing"

	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestCallsReuseConnections: with the client the service builds (vaultauth.NewClient),
// request-path calls keep their connection to Vault. Raw writes once lost it on every
// call (vault/api canceled its own timeout before the body was read), so each Transit
// signature opened a new TCP connection.
func TestCallsReuseConnections(t *testing.T) {
	srv := vaulttest.Start(t)
	c, err := vaultauth.NewClient(vaultauth.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(srv.RootToken)
	s := mustStoreWith(t, c, vaultstore.Config{Prefix: freshPrefix()})
	hub := iotHub("hub-t", true)
	mustCreateHub(t, s, hub)
	mustCreateDevice(t, s, keyedDevice("sensor-0001", "hub-t"))

	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"transit hmac", func(ctx context.Context) error {
			_, err := s.HMAC(ctx, hub, "sensor-0001", "", []byte("x\n1"))
			return err
		}},
		{"kv read", func(ctx context.Context) error {
			_, err := s.GetDevice(ctx, "sensor-0001")
			return err
		}},
	} {
		var fresh atomic.Int32
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				fresh.Add(1)
			}
		}})
		const calls = 50
		for range calls {
			if err := call.do(ctx); err != nil {
				t.Fatalf("%s: %v", call.name, err)
			}
		}
		if n := fresh.Load(); n > 1 {
			t.Errorf("%s: %d of %d calls opened a new connection, want at most the first", call.name, n, calls)
		}
	}
}
