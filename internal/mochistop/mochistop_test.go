package mochistop_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/mochistop"
)

// connectPacket is an MQTT 3.1.1 CONNECT with a clean session for id.
func connectPacket(t *testing.T, id string) []byte {
	t.Helper()
	var b bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id}}
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCloseWhileClientsComeAndGo closes a broker (with its inline client, as the
// gateway's intake runs it) while clients connect and go away as fast as they can —
// each arrival and departure takes the client map's write lock, the lock mochi's own
// Close deadlocked on in CI. Each Close returns, and leaves no client connected and
// nothing accepting (the server's own inline client aside). (The
// deadlock itself needs a writer to arrive inside a window between two lock calls:
// this churn did not reproduce it in 30 rounds of mochi's own Close, so this test
// shows that mochistop.Close works under churn, not the race.)
func TestCloseWhileClientsComeAndGo(t *testing.T) {
	for round := range 10 {
		srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
			t.Fatal(err)
		}
		go srv.Serve()
		ctx, stop := context.WithCancel(t.Context())
		var churn sync.WaitGroup
		for w := range 16 {
			pkt := connectPacket(t, fmt.Sprintf("r%d-w%d", round, w))
			churn.Go(func() {
				for ctx.Err() == nil {
					c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
					if err != nil {
						continue
					}
					c.SetDeadline(time.Now().Add(time.Second))
					c.Write(pkt)
					c.Read(make([]byte, 4)) // CONNACK
					c.Close()
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		closed := make(chan error, 1)
		go func() { closed <- mochistop.Close(srv, "tcp") }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("round %d: Close: %v", round, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: Close did not return within 20 s (the client map's lock is held for ever)", round)
		}
		for id, cl := range srv.Clients.GetAll() {
			if !cl.Net.Inline && !cl.Closed() {
				t.Errorf("round %d: client %s still connected after Close", round, id)
			}
		}
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Errorf("round %d: the listener still accepts after Close", round)
		}
		stop()
		churn.Wait()
	}
}
