package handshake_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/handshake"
)

// server serves HTTPS through a Limiter of n slots. Each handshake's certificate
// lookup, which runs inside the slot, takes hold and is counted, so the test sees how
// many handshakes ran at once.
type server struct {
	url     string
	lim     *handshake.Limiter
	now     atomic.Int32
	maxSeen atomic.Int32
}

func startServer(t *testing.T, n int, wait, hold time.Duration, clientAuth tls.ClientAuthType) (*server, *x509.CertPool) {
	t.Helper()
	ca := testpeer.NewCA(t, "handshake test CA")
	cert, pool := ca.Issue(t, "127.0.0.1").TLS, ca.Pool()
	s := &server{lim: handshake.New(n, wait)}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: clientAuth,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cur := s.now.Add(1)
			defer s.now.Add(-1)
			for {
				m := s.maxSeen.Load()
				if cur <= m || s.maxSeen.CompareAndSwap(m, cur) {
					break
				}
			}
			time.Sleep(hold)
			return &cert, nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ConnState:         s.lim.ConnState,
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(tls.NewListener(ln, s.lim.Config(base)))
	t.Cleanup(func() { srv.Close() })
	s.url = "https://" + ln.Addr().String()
	return s, pool
}

// get does one request on a new connection.
func get(url string, pool *x509.CertPool) error {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true,
	}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// waitIdle waits until every slot is back.
func waitIdle(t *testing.T, lim *handshake.Limiter) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for lim.Stats().InUse != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held", lim.Stats().InUse)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHandshakesBeyondTheLimitWaitAndSucceed(t *testing.T) {
	const limit, clients = 2, 12
	s, pool := startServer(t, limit, 5*time.Second, 20*time.Millisecond, tls.NoClientCert)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() { errs <- get(s.url, pool) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("request: %v", err)
		}
	}
	if got := s.maxSeen.Load(); got > limit || got < 1 {
		t.Errorf("%d handshakes ran at once, want 1..%d", got, limit)
	}
	waitIdle(t, s.lim)
	if st := s.lim.Stats(); st.Waited == 0 || st.Busy != 0 {
		t.Errorf("stats %+v: want some handshakes counted as waiting, none busy", st)
	}
}

// TestFailedHandshakeGivesItsSlotBack: a client that gives up mid-handshake must not keep
// its slot: with one slot, later handshakes go on. The server asks for a client
// certificate (as tokensvc does with mutual TLS), so a handshake completes only on the
// client's second flight, which an abandoning client never sends.
func TestFailedHandshakeGivesItsSlotBack(t *testing.T) {
	s, pool := startServer(t, 1, 5*time.Second, 0, tls.RequestClientCert)
	addr := s.url[len("https://"):]
	for range 3 {
		// Not trusting the server's certificate, the client hangs up after its flight.
		if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: x509.NewCertPool()}); err == nil {
			c.Close()
			t.Fatal("a client that trusts nothing connected")
		}
	}
	waitIdle(t, s.lim)
	if err := get(s.url, pool); err != nil {
		t.Fatalf("after abandoned handshakes: %v", err)
	}
	waitIdle(t, s.lim)
}

// TestBusyPastTheWait: a handshake that cannot get a slot within the wait fails, rather
// than waiting past the point where the client would give up anyway.
func TestBusyPastTheWait(t *testing.T) {
	s, pool := startServer(t, 1, 50*time.Millisecond, 400*time.Millisecond, tls.NoClientCert)
	first := make(chan error, 1)
	go func() { first <- get(s.url, pool) }()
	for s.now.Load() == 0 { // the first handshake holds the only slot
		time.Sleep(time.Millisecond)
	}
	if err := get(s.url, pool); err == nil {
		t.Fatal("a second handshake got through while the only slot was held past the wait")
	}
	if err := <-first; err != nil {
		t.Fatalf("the handshake holding the slot: %v", err)
	}
	waitIdle(t, s.lim)
	if st := s.lim.Stats(); st.Busy != 1 {
		t.Errorf("stats %+v: want the refused handshake counted as busy", st)
	}
}
