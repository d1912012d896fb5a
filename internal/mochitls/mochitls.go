// Package mochitls is the part every stand-in broker for tests shares: a mochi-mqtt
// server with its logs discarded and one hook, serving MQTT over TLS on a loopback
// port, optionally behind a gate that completes each TLS handshake before mochi sees
// the connection (so a refused handshake is counted once and never reaches a hook).
// The IoT Hub, JWT, AWS custom-authentication and certificate stand-ins use it. Only
// tests import it.
package mochitls

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/tokensvc/tokensvc/internal/mochistop"
)

// New returns a mochi server (inline client on, logs discarded) with hook added.
func New(tb testing.TB, hook mqtt.Hook) *mqtt.Server {
	tb.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(hook, nil); err != nil {
		tb.Fatal(err)
	}
	return srv
}

// Listener describes one MQTT-over-TLS listener.
type Listener struct {
	// ID is mochi's name for the listener.
	ID string
	// TLS is the server's configuration; its VerifyConnection is where a broker
	// checks ALPN or the client certificate.
	TLS *tls.Config
	// Refused, when set, puts the listener behind the handshake gate: a connection
	// reaches mochi only after its handshake succeeded, and a failed handshake is
	// reported to Refused (with the handshake's error) and closed.
	Refused func(error)
}

// Listen adds l on 127.0.0.1:0 to srv and returns its address.
func Listen(tb testing.TB, srv *mqtt.Server, l Listener) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var inner net.Listener = tls.NewListener(ln, l.TLS)
	if l.Refused != nil {
		inner = newGate(inner, l.Refused)
	}
	if err := srv.AddListener(listeners.NewNet(l.ID, inner)); err != nil {
		tb.Fatal(err)
	}
	addListenerID(srv, l.ID)
	return ln.Addr().String()
}

// ListenWS serves handler over HTTPS (conf) on 127.0.0.1:0, for the WebSocket
// transport, and adds to srv a listener named id for the connections the handler
// upgrades: it hands each to srv.EstablishConnection(id, conn). It returns the address
// and the HTTP server, which the caller closes in Serve's stop.
func ListenWS(tb testing.TB, srv *mqtt.Server, id string, conf *tls.Config, handler http.Handler) (string, *http.Server) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := srv.AddListener(listeners.NewMockListener(id, addr)); err != nil {
		tb.Fatal(err)
	}
	addListenerID(srv, id)
	ws := &http.Server{Handler: handler, TLSConfig: conf, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ws.ServeTLS(ln, "", "") }()
	return addr, ws
}

// Serve serves srv until the test ends; before closing it, cleanup runs stop (when not
// nil), for what must end first (WebSocket servers feeding srv).
func Serve(tb testing.TB, srv *mqtt.Server, stop func()) {
	tb.Helper()
	go func() { _ = srv.Serve() }()
	tb.Cleanup(func() {
		if stop != nil {
			stop()
		}
		listenerMu.Lock()
		ids := listenerIDs[srv]
		delete(listenerIDs, srv)
		listenerMu.Unlock()
		_ = mochistop.Close(srv, ids...)
	})
}

// listenerIDs are the listeners Listen and ListenWS added to each server, which
// Serve's cleanup closes through mochistop.
var (
	listenerMu  sync.Mutex
	listenerIDs = map[*mqtt.Server][]string{}
)

func addListenerID(srv *mqtt.Server, id string) {
	listenerMu.Lock()
	listenerIDs[srv] = append(listenerIDs[srv], id)
	listenerMu.Unlock()
}

// gate hands mochi only connections whose TLS handshake completed.
type gate struct {
	net.Listener
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	refuse func(error)
}

func newGate(inner net.Listener, refuse func(error)) *gate {
	g := &gate{Listener: inner, conns: make(chan net.Conn), done: make(chan struct{}), refuse: refuse}
	go g.accept()
	return g
}

func (g *gate) accept() {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			g.Close()
			return
		}
		go func() {
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				g.refuse(err)
				tc.Close()
				return
			}
			_ = tc.SetDeadline(time.Time{})
			select {
			case g.conns <- tc:
			case <-g.done:
				tc.Close()
			}
		}()
	}
}

func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.conns:
		return c, nil
	case <-g.done:
		return nil, net.ErrClosed
	}
}

func (g *gate) Close() error {
	g.once.Do(func() { close(g.done) })
	return g.Listener.Close()
}

// Hook is what a stand-in's hook embeds: mochi's HookBase with the hook's name and the
// events it handles, so that the stand-in writes only its event methods.
type Hook struct {
	mqtt.HookBase
	Name   string
	Events []byte
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return h.Name }

// Provides implements mqtt.Hook: the hook handles the events in Events.
func (h *Hook) Provides(b byte) bool { return slices.Contains(h.Events, b) }
