package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestSIGTERMUnderLoad starts the real tokensvc binary on the embedded store, drives
// GET /token from 16 keep-alive workers, sends SIGTERM mid-load and checks the drain:
// every request the service took is answered 200 (none fails in flight), the only other
// outcome is "connection refused" on a new connection once the listener is closed, and
// the process exits 0 well within its drain time. Bounded: at most about 45 s.
func TestSIGTERMUnderLoad(t *testing.T) {
	bin := buildTokensvc(t)
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	const drain = 10 * time.Second
	p := startSvc(t, bin, []string{
		"TOKENSVC_DATA_DIR=" + filepath.Join(t.TempDir(), "data"),
		"TOKENSVC_SHUTDOWN_TIMEOUT=" + drain.String(),
	})
	devices := mustProvisionHS256(t, p.url, "sigterm-", 32)

	const workers = 16
	load := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}}
	defer load.CloseIdleConnections()
	var (
		signalled           atomic.Bool
		okBefore, okAfter   atomic.Int64
		refused             atomic.Int64
		mu                  sync.Mutex
		failures            []string
		wg                  sync.WaitGroup
		loadCtx, cancelLoad = context.WithCancel(ctx)
	)
	defer cancelLoad()
	fail := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, what)
	}
	for w := range workers {
		wg.Go(func() {
			for k := w; loadCtx.Err() == nil; k += workers {
				d := devices[k%len(devices)]
				assertion, err := signAssertion(d.id, d.secret, fmt.Sprintf("sigterm-%d-%d", w, k), time.Now())
				if err != nil {
					fail(err.Error())
					return
				}
				req, _ := http.NewRequestWithContext(loadCtx, http.MethodGet, p.url+"/token", nil)
				req.Header.Set("Authorization", "Bearer "+assertion)
				resp, err := load.Do(req)
				switch {
				case err != nil && loadCtx.Err() != nil:
					return
				case err != nil && errors.Is(err, syscall.ECONNREFUSED):
					// A new connection after the listener closed: expected, and the end of
					// this worker's run.
					refused.Add(1)
					return
				case err != nil:
					fail("transport: " + err.Error())
					return
				}
				_, rerr := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case rerr != nil:
					fail("body: " + rerr.Error())
				case resp.StatusCode != http.StatusOK:
					fail("status " + strconv.Itoa(resp.StatusCode))
				case signalled.Load():
					okAfter.Add(1)
				default:
					okBefore.Add(1)
				}
			}
		})
	}

	// Load running on warm keep-alive connections for a second.
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(time.Second):
	}
	// One request held in flight across the signal, so the drain of a request the
	// service has taken is exercised on every run, not only when a worker happens to be
	// mid-request: its body is half sent before SIGTERM and finished after.
	held := holdRequest(ctx, t, p.url)
	signalled.Store(true)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if status := held(); status != http.StatusCreated {
		t.Errorf("request in flight at SIGTERM: got %d, want 201 (drained)", status)
	} else {
		okAfter.Add(1)
	}
	select {
	case <-p.exited:
	case <-time.After(drain + 2*time.Second):
		t.Fatalf("tokensvc still running %v after SIGTERM (drain %v)", time.Since(sent), drain)
	}
	took := time.Since(sent)
	cancelLoad()
	wg.Wait()

	t.Logf("200 before SIGTERM %d, 200 after %d, refused new connections %d, exit after %v", okBefore.Load(), okAfter.Load(), refused.Load(), took.Round(time.Millisecond))
	if st := p.cmd.ProcessState; st == nil || !st.Success() {
		t.Errorf("got exit %v, want a clean exit 0\nlog:\n%s", st, tail(p.log.String(), 30))
	}
	if len(failures) > 0 {
		t.Errorf("got %d failed requests, want 0: %q", len(failures), failures[:min(len(failures), 10)])
	}
	if okBefore.Load() == 0 || okAfter.Load() == 0 {
		t.Errorf("got %d OK before and %d after SIGTERM, want load on both sides of the signal", okBefore.Load(), okAfter.Load())
	}
}

// hs256Device is a provisioned device and its HS256 secret.
type hs256Device struct{ id, secret string }

// mustProvisionHS256 creates hub "bench" and n HS256 devices named prefix<i> through
// the generated client, as an operator would.
func mustProvisionHS256(t *testing.T, url, prefix string, n int) []hs256Device {
	t.Helper()
	c := client(t, url, crashAdmin)
	apptest.PostHub(t, c, oapi.HubCreate{Name: "bench", Kind: oapi.Iothub, Hostname: "bench.azure-devices.net"})
	devs := make([]hs256Device, n)
	for i := range devs {
		id := prefix + strconv.Itoa(i)
		d := apptest.PostDevice(t, c, hs256(id, "bench"))
		if d.Auth.Secret == nil {
			t.Fatalf("create device %s: 201 without a secret", id)
		}
		devs[i] = hs256Device{id: id, secret: *d.Auth.Secret}
	}
	return devs
}

// holdRequest starts an operator POST /devices whose body is half written, and returns
// once the service has had it for a moment; the returned function sends the rest and
// returns the status (0 on a transport error, which the caller reports).
func holdRequest(ctx context.Context, t *testing.T, url string) func() int {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/devices", pr)
	req.Header.Set("Authorization", "Bearer "+crashAdmin)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Logf("held request: %v", err)
			done <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if _, err := io.WriteString(pw, `{"deviceId": "sigterm-held", `); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the headers and half the body are at the service
	return func() int {
		if _, err := io.WriteString(pw, `"hub": "bench", "auth": {"type": "hs256"}}`); err != nil {
			t.Logf("held request body: %v", err)
		}
		pw.Close()
		return <-done
	}
}
