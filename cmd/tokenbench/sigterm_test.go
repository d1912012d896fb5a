package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMUnderLoad starts the real tokensvc binary on the embedded store, drives
// GET /token from 16 keep-alive workers, sends SIGTERM mid-load and checks the drain:
// every request the service took is answered 200 (none fails in flight), the only other
// outcome is "connection refused" on a new connection once the listener is closed, and
// the process exits 0 well within its drain time. Bounded: at most about 45 s.
func TestSIGTERMUnderLoad(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build tokensvc")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	dir := t.TempDir()
	bin := filepath.Join(dir, "tokensvc")
	build := exec.CommandContext(ctx, gobin, "build", "-o", bin, "github.com/tokensvc/tokensvc/cmd/tokensvc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tokensvc: %v\n%s", err, out)
	}

	const drain = 10 * time.Second
	port := mustFreePort(t)
	admin := "bench-admin-token-0123456789"
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	svc := exec.Command(bin)
	svc.Env = append(os.Environ(),
		"TOKENSVC_ADDR=127.0.0.1:"+strconv.Itoa(port),
		"TOKENSVC_DATA_DIR="+filepath.Join(dir, "data"),
		"TOKENSVC_ADMIN_TOKEN="+admin,
		"TOKENSVC_DEVICE_RATE=0",
		"TOKENSVC_MAX_INFLIGHT=0",
		"TOKENSVC_AUDIT=off",
		"TOKENSVC_LOG_LEVEL=warn",
		"TOKENSVC_SHUTDOWN_TIMEOUT="+drain.String(),
	)
	var stderr syncWriter
	svc.Stderr = &stderr
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- svc.Wait() }()
	defer func() {
		// Never leave the service behind, whatever failed.
		svc.Process.Kill()
		<-exited
	}()

	var dials atomic.Int64
	client := newClient(16, &dials)
	defer client.CloseIdleConnections()
	mustHealthy(ctx, t, client, base+"/healthz", exited)
	devices, err := provision(ctx, client, base, admin, "bench", "sigterm-", 32)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}

	var (
		signalled           atomic.Bool
		okBefore, okAfter   atomic.Int64
		refused             atomic.Int64
		mu                  sync.Mutex
		failures            []string
		wg                  sync.WaitGroup
		workers             = 16
		loadCtx, cancelLoad = context.WithCancel(ctx)
	)
	defer cancelLoad()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newSigner("tokensvc", "sigterm-"+strconv.Itoa(w)+"-")
			for k := w; loadCtx.Err() == nil; k += workers {
				req, _ := http.NewRequestWithContext(loadCtx, http.MethodGet, base+"/token", nil)
				req.Header.Set("Authorization", "Bearer "+s.sign(devices[k%len(devices)], time.Now()))
				resp, err := client.Do(req)
				switch {
				case err != nil && loadCtx.Err() != nil:
					return
				case err != nil && isConnRefused(err):
					// A new connection after the listener closed: expected, and the end of
					// this worker's run.
					refused.Add(1)
					return
				case err != nil:
					mu.Lock()
					failures = append(failures, "transport: "+err.Error())
					mu.Unlock()
					return
				}
				_, rerr := drainBody(resp)
				switch {
				case rerr != nil:
					mu.Lock()
					failures = append(failures, "body: "+rerr.Error())
					mu.Unlock()
				case resp.StatusCode != http.StatusOK:
					mu.Lock()
					failures = append(failures, "status "+strconv.Itoa(resp.StatusCode))
					mu.Unlock()
				case signalled.Load():
					okAfter.Add(1)
				default:
					okBefore.Add(1)
				}
			}
		}()
	}

	sleepUntil(ctx, time.Second) // load running on warm keep-alive connections
	signalled.Store(true)
	sent := time.Now()
	if err := svc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case exitErr = <-exited:
		exited <- exitErr // for the deferred cleanup
	case <-time.After(drain + 2*time.Second):
		t.Fatalf("tokensvc still running %v after SIGTERM (drain %v)", time.Since(sent), drain)
	}
	took := time.Since(sent)
	cancelLoad()
	wg.Wait()

	t.Logf("200 before SIGTERM %d, 200 after %d, refused new connections %d, exit after %v", okBefore.Load(), okAfter.Load(), refused.Load(), took.Round(time.Millisecond))
	if exitErr != nil {
		t.Errorf("got exit %v, want a clean exit 0\nstderr:\n%s", exitErr, stderr.String())
	}
	if len(failures) > 0 {
		t.Errorf("got %d failed requests, want 0: %q", len(failures), failures[:min(len(failures), 10)])
	}
	if okBefore.Load() == 0 || okAfter.Load() == 0 {
		t.Errorf("got %d OK before and %d after SIGTERM, want load on both sides of the signal", okBefore.Load(), okAfter.Load())
	}
}

// drainBody drains and closes a response body.
func drainBody(resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	var n int64
	buf := make([]byte, 8<<10)
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func mustFreePort(tb testing.TB) int {
	tb.Helper()
	var b syncWriter
	if err := printFreePort(&b); err != nil {
		tb.Fatal(err)
	}
	var port int
	if _, err := fmt.Sscan(b.String(), &port); err != nil {
		tb.Fatal(err)
	}
	return port
}

func mustHealthy(ctx context.Context, tb testing.TB, client *http.Client, url string, exited <-chan error) {
	tb.Helper()
	for i := 0; i < 150; i++ {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			tb.Fatalf("tokensvc exited before it was healthy: %v", err)
		case <-ctx.Done():
			tb.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	tb.Fatalf("tokensvc not healthy at %s after 15 s", url)
}

// syncWriter is a goroutine-safe buffer for a child's stderr.
type syncWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
