// Package mochistop shuts a mochi-mqtt server down without the deadlock in its own
// Close (mochi v2.7.9): Server.Close asks each listener to close its clients through
// Clients.GetByListener, which takes the client map's read lock and then, through
// Len, takes it again; a client connecting or going away in between (Clients.Add or
// Delete, waiting for the write lock) blocks that second read lock, and both wait
// for ever. It happened in CI, in a test broker's cleanup.
//
// Close therefore never lets mochi call GetByListener: it closes the listeners itself
// with a callback that does nothing and removes them from the server, then
// disconnects the clients itself (Clients.GetAll takes the read lock once), and only
// then calls Server.Close, which finds no listener left and waits, as it always does,
// for the clients' goroutines to end.
package mochistop

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// settle is how long Close lets connections accepted just before their listener
// closed reach the server (mochi counts a connection in a WaitGroup only once its
// goroutine runs, and Server.Close waits on that group).
const settle = 100 * time.Millisecond

// sweep is how often Close disconnects clients that attached while it waited.
const sweep = 100 * time.Millisecond

// Close closes srv's listeners named ids (every listener the caller added), then
// every client, then srv.
func Close(srv *mqtt.Server, ids ...string) error {
	for _, id := range ids {
		if l, ok := srv.Listeners.Get(id); ok {
			l.Close(func(string) {})
			srv.Listeners.Delete(id)
		}
	}
	time.Sleep(settle)
	disconnectAll(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	t := time.NewTicker(sweep)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			disconnectAll(srv)
		}
	}
}

// disconnectAll disconnects every open client but the server's own inline one.
func disconnectAll(srv *mqtt.Server) {
	for _, cl := range srv.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() {
			_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}
