package app_test

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestStalledHandshakesDoNotLockOut serves HTTPS with one handshake slot and mutual TLS
// optional (the server then waits for the client's certificate flight before its
// handshake completes); a client that sends its ClientHello and then nothing must not
// keep that slot until net/http's handshake deadline (5 s) while a device's handshake
// waits for it (4 s) and fails.
func TestStalledHandshakesDoNotLockOut(t *testing.T) {
	ca := testca.NewCA(t, "handshake CA")
	leaf := ca.Issue(t, testca.Spec{Hosts: []string{"127.0.0.1"}})
	svc := apptest.Start(t, apptest.Options{
		CertPEM: string(leaf.CertPEM()), KeyPEM: string(leaf.KeyPEM()), RootCAs: testca.Pool(ca),
		Config: func(c *app.Config) { c.MaxHandshakes, c.ClientAuth = 1, "optional" },
	})
	raw, err := net.Dial("tcp", strings.TrimPrefix(svc.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	answered := make(chan struct{})
	go func() {
		_ = tls.Client(helloOnly{Conn: raw, answered: answered}, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}()
	<-answered // the server took the slot and sent its flight

	resp, err := svc.HTTPClient.Get(svc.URL + "/healthz")
	if err != nil {
		t.Fatalf("a device beside a stalled handshake: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %d", resp.StatusCode)
	}
}

// helloOnly sends the ClientHello and then nothing: it closes answered once the
// server's flight arrives and hands the handshake nothing to read.
type helloOnly struct {
	net.Conn
	answered chan struct{}
}

func (c helloOnly) Read([]byte) (int, error) {
	var b [1]byte
	if _, err := io.ReadFull(c.Conn, b[:]); err == nil {
		close(c.answered)
	}
	_, _ = io.Copy(io.Discard, c.Conn) // until closed
	return 0, io.EOF
}
