package vaultstore_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// gate is an http.RoundTripper in front of the real Vault that counts the items of
// every Transit hmac or sign call and can hold the next such call until released.
type gate struct {
	next http.RoundTripper

	mu      sync.Mutex
	items   []int         // items per Transit call, in the order they were sent
	hold    chan struct{} // non-nil: the next Transit call waits for it to close
	arrived chan struct{} // closed when the held call has arrived
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.Contains(req.URL.Path, "/hmac/") && !strings.Contains(req.URL.Path, "/sign/") {
		return g.next.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	g.mu.Lock()
	g.items = append(g.items, bytes.Count(body, []byte(`"input":`)))
	hold, arrived := g.hold, g.arrived
	g.hold, g.arrived = nil, nil
	g.mu.Unlock()
	if hold != nil {
		close(arrived)
		select {
		case <-hold:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return g.next.RoundTrip(req)
}

// holdNext makes the next Transit call wait; release lets it go.
func (g *gate) holdNext() (<-chan struct{}, func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	hold, arrived := make(chan struct{}), make(chan struct{})
	g.hold, g.arrived = hold, arrived
	return arrived, sync.OnceFunc(func() { close(hold) })
}

func (g *gate) calls() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.items)
}

func (g *gate) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.items = nil
}

// gatedStore opens a store on srv (as root, under prefix) whose client goes through a
// gate, with batches of at most max and a 5 s request timeout.
func gatedStore(t testing.TB, srv *vaulttest.Server, prefix string, max int) (*vaultstore.Store, *gate) {
	t.Helper()
	return gatedStoreWith(t, srv, vaultstore.Config{Prefix: prefix, TransitBatchMax: max, RequestTimeout: 5 * time.Second})
}

func gatedStoreWith(t testing.TB, srv *vaulttest.Server, vcfg vaultstore.Config) (*vaultstore.Store, *gate) {
	t.Helper()
	var g *gate
	c := srv.ClientThrough(t, func(next http.RoundTripper) http.RoundTripper {
		g = &gate{next: next}
		return g
	})
	s := mustStoreWith(t, c, vcfg)
	t.Cleanup(func() { _ = s.Close() })
	return s, g
}

// makeWrappingKey has Transit make its RSA-4096 wrapping key (on the first read, with no
// deadline): on a loaded machine that can outlast the store's 5 s write deadline for the
// first key import, which these tests are not about.
func makeWrappingKey(tb testing.TB, srv *vaulttest.Server) {
	tb.Helper()
	if _, err := srv.Client(tb).Logical().Read("transit/wrapping_key"); err != nil {
		tb.Fatalf("read transit/wrapping_key: %v", err)
	}
}

// queueBehindHeld sends first as a call the gate holds, then the others concurrently,
// waits until all of them queue behind it (pending reports how many do), and
// releases the held call. It returns the others' outcomes, in order, and the first's
// error.
func queueBehindHeld[T any](t *testing.T, g *gate, pending func() int, first func() (T, error), others []func() (T, error)) ([]T, []error, error) {
	t.Helper()
	arrived, release := g.holdNext()
	defer release()
	firstDone := make(chan error, 1)
	go func() { _, err := first(); firstDone <- err }()
	<-arrived
	vals, errs := make([]T, len(others)), make([]error, len(others))
	var wg sync.WaitGroup
	for i, f := range others {
		wg.Go(func() { vals[i], errs[i] = f() })
	}
	for pending() < len(others) {
		time.Sleep(time.Millisecond) // waiting for goroutines to queue, not for a result
	}
	release()
	firstErr := <-firstDone
	wg.Wait()
	return vals, errs, firstErr
}

// TestTransitHMACBatching: concurrent HMACs with one key share Transit calls of at most
// TransitBatchMax items, give exactly what single calls give, and one item Transit
// refuses fails only its own caller; a lone HMAC goes out alone.
func TestTransitHMACBatching(t *testing.T) {
	srv := vaulttest.Start(t)
	makeWrappingKey(t, srv)
	prefix := freshPrefix()
	s, g := gatedStore(t, srv, prefix, 8)
	single := mustStoreWith(t, srv.Client(t), vaultstore.Config{Prefix: prefix}) // batching off
	ctx := t.Context()
	hub := iotHub("batch-hub", true)
	mustCreateHub(t, s, hub)
	d := keyedDevice("dev-1", hub.Name)
	mustCreateDevice(t, s, d)
	key := mustDecode(t, d.PrimaryKey)
	name := s.DeviceKeyName(d.ID, "", "primary")
	g.reset()

	if mac, err := s.HMAC(ctx, hub, d.ID, "", []byte("lone")); err != nil || !bytes.Equal(mac, localHMAC(key, []byte("lone"))) {
		t.Fatalf("lone HMAC: got %x, %v", mac, err)
	}
	if got := g.calls(); !slices.Equal(got, []int{1}) {
		t.Fatalf("lone HMAC: items per call %v, want [1]", got)
	}

	t.Run("batches split at max", func(t *testing.T) {
		g.reset()
		msgs := make([][]byte, 20)
		others := make([]func() ([]byte, error), len(msgs))
		for i := range msgs {
			msgs[i] = fmt.Appendf(nil, "sr=batch-hub/devices/dev-1\nse=%d", 1700000000+i)
			others[i] = func() ([]byte, error) { return s.HMAC(ctx, hub, d.ID, "", msgs[i]) }
		}
		macs, errs, firstErr := queueBehindHeld(t, g, func() int { return s.PendingHMAC(name) },
			func() ([]byte, error) { return s.HMAC(ctx, hub, d.ID, "", []byte("first")) }, others)
		if firstErr != nil {
			t.Errorf("held call: %v", firstErr)
		}
		for i, m := range msgs {
			want, err := single.HMAC(ctx, hub, d.ID, "", m)
			if err != nil {
				t.Fatal(err)
			}
			if errs[i] != nil || !bytes.Equal(macs[i], want) || !bytes.Equal(want, localHMAC(key, m)) {
				t.Errorf("HMAC %d in a batch: got %x, %v, want %x (the single call's)", i, macs[i], errs[i], want)
			}
		}
		if got := g.calls(); !slices.Equal(got, []int{1, 8, 8, 4}) {
			t.Errorf("items per call: got %v, want [1 8 8 4] (held, then 20 split at 8)", got)
		}
	})

	t.Run("an item Transit refuses fails only its caller", func(t *testing.T) {
		g.reset()
		inputs := []string{"Z29vZA==", "not base64!", "bW9yZQ=="} // good, refused, good
		others := make([]func() ([]byte, error), len(inputs))
		for i, in := range inputs {
			others[i] = func() ([]byte, error) { return s.HMACInput(ctx, name, in) }
		}
		macs, errs, firstErr := queueBehindHeld(t, g, func() int { return s.PendingHMAC(name) },
			func() ([]byte, error) { return s.HMAC(ctx, hub, d.ID, "", []byte("first")) }, others)
		if firstErr != nil {
			t.Errorf("held call: %v", firstErr)
		}
		for i, want := range [][]byte{localHMAC(key, []byte("good")), nil, localHMAC(key, []byte("more"))} {
			if want == nil {
				if errs[i] == nil || errors.Is(errs[i], store.ErrUnavailable) || errors.Is(errs[i], store.ErrNotFound) {
					t.Errorf("refused item: got %x, %v, want a plain refusal", macs[i], errs[i])
				}
				continue
			}
			if errs[i] != nil || !bytes.Equal(macs[i], want) {
				t.Errorf("item %d beside a refused one: got %x, %v, want %x", i, macs[i], errs[i], want)
			}
		}
		if got := g.calls(); !slices.Equal(got, []int{1, 3}) {
			t.Errorf("items per call: got %v, want [1 3] (the three in one batch)", got)
		}
	})

	t.Run("a missing key fails its whole batch as not found", func(t *testing.T) {
		g.reset()
		others := make([]func() ([]byte, error), 3)
		for i := range others {
			others[i] = func() ([]byte, error) { return s.HMAC(ctx, hub, "absent", "", []byte{byte(i)}) }
		}
		_, errs, firstErr := queueBehindHeld(t, g, func() int { return s.PendingHMAC(s.DeviceKeyName("absent", "", "primary")) },
			func() ([]byte, error) { return s.HMAC(ctx, hub, "absent", "", []byte("first")) }, others)
		for i, err := range append(errs, firstErr) {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("item %d: got %v, want store.ErrNotFound", i, err)
			}
		}
	})

	t.Run("concurrency forms batches on its own", func(t *testing.T) {
		g.reset()
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Go(func() {
				for i := range 10 {
					m := fmt.Appendf(nil, "w%d-%d", w, i)
					if mac, err := s.HMAC(ctx, hub, d.ID, "", m); err != nil || !bytes.Equal(mac, localHMAC(key, m)) {
						t.Errorf("HMAC %s: got %x, %v", m, mac, err)
					}
				}
			})
		}
		wg.Wait()
		calls, items := g.calls(), 0
		for _, n := range calls {
			items += n
		}
		if items != 320 || len(calls) >= items {
			t.Errorf("%d items in %d calls, want 320 items in fewer calls", items, len(calls))
		}
	})

	t.Run("a caller giving up leaves its batch to the others", func(t *testing.T) {
		g.reset()
		quit, cancel := context.WithCancel(ctx)
		arrived, release := g.holdNext()
		defer release()
		done := make(chan error, 1)
		go func() { _, err := s.HMAC(quit, hub, d.ID, "", []byte("quitter")); done <- err }()
		<-arrived
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled caller: got %v, want context.Canceled", err)
		}
		// The quitter's call is still held, not cancelled: a stayer queues behind it.
		vals := make(chan error, 1)
		go func() { _, err := s.HMAC(ctx, hub, d.ID, "", []byte("stayer")); vals <- err }()
		for s.PendingHMAC(name) < 1 {
			time.Sleep(time.Millisecond)
		}
		release()
		if err := <-vals; err != nil {
			t.Errorf("caller beside a cancelled one: %v", err)
		}
		if got := g.calls(); !slices.Equal(got, []int{1, 1}) {
			t.Errorf("items per call: got %v, want [1 1]", got)
		}
	})

	t.Run("an outage fails the backlog with the batch in flight", func(t *testing.T) {
		// A store of its own with a shorter deadline, so the outage costs 2×2 s, not 2×5.
		s, g := gatedStoreWith(t, srv, vaultstore.Config{Prefix: prefix, TransitBatchMax: 8, RequestTimeout: 2 * time.Second})
		others := make([]func() ([]byte, error), 20)
		for i := range others {
			others[i] = func() ([]byte, error) { return s.HMAC(ctx, hub, d.ID, "", []byte{byte(i)}) }
		}
		pending := func() int {
			n := s.PendingHMAC(name)
			if n == len(others) {
				srv.Pause() // the held call goes to a Vault that does not answer
			}
			return n
		}
		_, errs, firstErr := queueBehindHeld(t, g, pending,
			func() ([]byte, error) { return s.HMAC(ctx, hub, d.ID, "", []byte("first")) }, others)
		srv.Resume()
		for i, err := range append(errs, firstErr) {
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("caller %d: got %v, want store.ErrUnavailable", i, err)
			}
		}
		if got := g.calls(); !slices.Equal(got, []int{1, 8}) {
			t.Errorf("items per call: got %v, want [1 8] (the backlog failed with the second failed call, not in 2 more timeouts)", got)
		}
		if mac, err := s.HMAC(ctx, hub, d.ID, "", []byte("after")); err != nil || !bytes.Equal(mac, localHMAC(key, []byte("after"))) {
			t.Errorf("HMAC once Vault is back: got %x, %v", mac, err)
		}
	})

	t.Run("close ends the calls in flight", func(t *testing.T) {
		arrived, release := g.holdNext()
		defer release()
		done := make(chan error, 1)
		go func() { _, err := s.HMAC(ctx, hub, d.ID, "", []byte("at close")); done <- err }()
		<-arrived
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err == nil {
			t.Error("HMAC held across Close: got a MAC, want an error")
		}
		if _, err := s.HMAC(ctx, hub, d.ID, "", []byte("after")); !errors.Is(err, vaultstore.ErrClosed) {
			t.Errorf("HMAC after Close: got %v, want ErrClosed", err)
		}
	})
}

// TestTransitSignBatching: concurrent issuer signatures with one key share Transit
// calls, verify against the key, equal single calls' (RS256 PKCS#1 v1.5 is
// deterministic), and a refused item fails alone.
func TestTransitSignBatching(t *testing.T) {
	srv := vaulttest.Start(t)
	prefix := freshPrefix()
	s, g := gatedStore(t, srv, prefix, 64)
	single := mustStoreWith(t, srv.Client(t), vaultstore.Config{Prefix: prefix})
	ctx := t.Context()
	for _, alg := range []domain.IssuerAlg{domain.AlgES256, domain.AlgRS256} {
		t.Run(string(alg), func(t *testing.T) {
			kid := "kb-" + string(alg)
			pub, err := s.CreateIssuerKey(ctx, kid, alg)
			if err != nil {
				t.Fatal(err)
			}
			g.reset()
			digests := make([][]byte, 6)
			others := make([]func() ([]byte, error), len(digests)+1)
			for i := range digests {
				sum := sha256.Sum256(fmt.Appendf(nil, "header.payload-%d", i))
				digests[i] = sum[:]
				others[i] = func() ([]byte, error) { return s.SignIssuerDigest(ctx, kid, alg, digests[i]) }
			}
			others[len(digests)] = func() ([]byte, error) { return s.SignInput(ctx, kid, alg, "not base64!") }
			first := sha256.Sum256([]byte("first"))
			sigs, errs, firstErr := queueBehindHeld(t, g, func() int { return s.PendingSign(kid, alg) },
				func() ([]byte, error) { return s.SignIssuerDigest(ctx, kid, alg, first[:]) }, others)
			if firstErr != nil {
				t.Errorf("held call: %v", firstErr)
			}
			for i, dg := range digests {
				if errs[i] != nil || !verifies(pub, dg, sigs[i]) {
					t.Errorf("signature %d from a batch: %v, or it does not verify", i, errs[i])
				}
				if alg == domain.AlgRS256 {
					want, err := single.SignIssuerDigest(ctx, kid, alg, dg)
					if err != nil || !bytes.Equal(sigs[i], want) {
						t.Errorf("RS256 signature %d from a batch differs from the single call's (%v)", i, err)
					}
				}
			}
			if err := errs[len(digests)]; err == nil || errors.Is(err, store.ErrUnavailable) {
				t.Errorf("refused item: got %v, want a plain refusal", err)
			}
			if got := g.calls(); !slices.Equal(got, []int{1, len(others)}) {
				t.Errorf("items per call: got %v, want [1 %d]", got, len(others))
			}
		})
	}
}

func verifies(pub crypto.PublicKey, digest, sig []byte) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(p, crypto.SHA256, digest, sig) == nil
	case *ecdsa.PublicKey:
		return len(sig) == 64 && ecdsa.Verify(p, digest, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	return false
}
