// Package mochistop shuts a mochi-mqtt server down without the deadlock in its own
// Close (mochi v2.7.9): Server.Close asks each listener for its clients through
// Clients.GetByListener, which takes the clients' read lock and then, through Len,
// takes it again; a client connecting or going away in between (Clients.Add or
// Delete, waiting for the write lock) blocks that second read lock, and both wait
// for ever. It happened in CI, in a test broker's cleanup.
//
// Close therefore first stops what could write to the client map — it stops the
// network listeners named from accepting, disconnects every client and waits until
// each connection's goroutine has ended (Listeners.ClientsWg) — and only then calls
// Server.Close, which then finds no open client to disconnect.
package mochistop

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Close stops srv's network listeners (listeners.Net) named netIDs from accepting,
// disconnects every client, waits for their connections to end and closes srv.
func Close(srv *mqtt.Server, netIDs ...string) error {
	for _, id := range netIDs {
		if l, ok := srv.Listeners.Get(id); ok {
			if n, ok := l.(*listeners.Net); ok {
				// Closed without its clients: Server.Close will not ask again.
				n.Close(func(string) {})
			}
		}
	}
	for _, cl := range srv.Clients.GetAll() {
		if !cl.Closed() {
			_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
	srv.Listeners.ClientsWg.Wait()
	return srv.Close()
}
