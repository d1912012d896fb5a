package handshake_test

import (
	"cmp"
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

func startServer(t *testing.T, n int, wait, hold time.Duration, clientAuth tls.ClientAuthType, opts ...func(*tls.Config)) (*server, *x509.CertPool) {
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
	for _, o := range opts {
		o(base)
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
	go srv.Serve(tls.NewListener(s.lim.Listener(ln), s.lim.Config(base)))
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

// stallAfterHello connects to addr and sends a real ClientHello, waits for the server's
// flight (the server has taken a slot by then), then reads nothing and sends nothing
// more until the test ends: a slowloris client.
func stallAfterHello(t *testing.T, addr string) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	answered := make(chan struct{})
	c := tls.Client(stalledConn{Conn: raw, answered: answered}, &tls.Config{InsecureSkipVerify: true})
	go func() { _ = c.Handshake() }()
	<-answered
}

// stalledConn closes answered when the server's first byte arrives and hands the
// handshake nothing to read.
type stalledConn struct {
	net.Conn
	answered chan struct{}
}

func (c stalledConn) Read([]byte) (int, error) {
	var b [1]byte
	if _, err := io.ReadFull(c.Conn, b[:]); err == nil {
		close(c.answered)
	}
	_, err := io.Copy(io.Discard, c.Conn) // until closed
	return 0, cmp.Or(err, io.EOF)
}

// TestStalledClientHoldsNoSlot: clients that send a ClientHello and then stall must not
// keep the slots until the handshake deadline (5 s here) while devices wait (1 s here)
// and fail: the slot is back once the server has sent its flight.
func TestStalledClientHoldsNoSlot(t *testing.T) {
	s, pool := startServer(t, 2, time.Second, 0, tls.RequestClientCert)
	addr := s.url[len("https://"):]
	for range 2 {
		stallAfterHello(t, addr)
	}
	if err := get(s.url, pool); err != nil {
		t.Fatalf("with stalled clients: %v", err)
	}
	waitIdle(t, s.lim) // with the stalled connections still open
	if st := s.lim.Stats(); st.Busy != 0 {
		t.Errorf("stats %+v: want no handshake refused", st)
	}
}

// TestHelloRetryKeepsTheSlot: a HelloRetryRequest is not the server's flight; the slot
// stays held through the second ClientHello and the certificate work it leads to, so
// the bound still holds for clients whose key share the server does not take.
func TestHelloRetryKeepsTheSlot(t *testing.T) {
	const limit, clients = 1, 6
	p256Only := func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP256} }
	s, pool := startServer(t, limit, 5*time.Second, 50*time.Millisecond, tls.NoClientCert, p256Only)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			// An X25519 key share first: the server, taking P-256 only, asks again.
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13,
					CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}},
				DisableKeepAlives: true,
			}}
			resp, err := c.Get(s.url)
			if err == nil {
				resp.Body.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("request: %v", err)
		}
	}
	if got := s.maxSeen.Load(); got > limit {
		t.Errorf("%d handshakes ran their certificate work at once, want at most %d", got, limit)
	}
	waitIdle(t, s.lim)
}
