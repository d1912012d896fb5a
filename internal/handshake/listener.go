package handshake

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
)

// Listener returns ln with its connections watched so that a handshake gives its slot
// back as soon as the server has sent its flight and waits for the client's: the work a
// slot bounds (the server's key exchange and signature) is done by then, and a client
// that sends a ClientHello and then stalls would otherwise hold its slot until the
// handshake deadline — a few hundred such connections every few seconds would keep
// every device out. Serve TLS with Config on the returned listener.
//
// A HelloRetryRequest is not that flight: the slot stays held through the second
// ClientHello and the server's answer to it.
func (l *Limiter) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln} }

type listener struct{ net.Listener }

func (ln *listener) Accept() (net.Conn, error) {
	c, err := ln.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c}, nil
}

// watchedConn gives its handshake slot back on the first read after the server wrote
// its flight.
type watchedConn struct {
	net.Conn
	// holding is set while the handshake holds a slot: reads and writes outside the
	// handshake take no lock.
	holding atomic.Bool

	mu      sync.Mutex
	release func() // set while the handshake holds a slot
	wrote   bool   // the server wrote since it took the slot (or since a retry request)
	retry   bool   // what it wrote was a HelloRetryRequest
}

// hold records the slot's release, called by the slot's holder at most once.
func (c *watchedConn) hold(release func()) {
	c.mu.Lock()
	c.release = release
	c.mu.Unlock()
	c.holding.Store(true)
}

func (c *watchedConn) Write(p []byte) (int, error) {
	if !c.holding.Load() {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	if c.release != nil && !c.wrote {
		c.wrote, c.retry = true, isHelloRetry(p)
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *watchedConn) Read(p []byte) (int, error) {
	if !c.holding.Load() {
		return c.Conn.Read(p)
	}
	var release func()
	c.mu.Lock()
	if c.release != nil && c.wrote {
		if c.retry {
			c.wrote, c.retry = false, false // the second ClientHello comes next
		} else {
			release, c.release = c.release, nil
			c.holding.Store(false)
		}
	}
	c.mu.Unlock()
	if release != nil {
		release()
	}
	return c.Conn.Read(p)
}

// helloRetryRandom is the Random of a ServerHello that is a HelloRetryRequest (RFC 8446,
// section 4.1.3).
var helloRetryRandom = []byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

// isHelloRetry reports whether p starts with a plaintext handshake record holding a
// ServerHello whose Random marks a HelloRetryRequest: record header (5 bytes), message
// type and length (4), legacy version (2), then the Random.
func isHelloRetry(p []byte) bool {
	const recordHandshake, typeServerHello = 22, 2
	return len(p) >= 11+32 && p[0] == recordHandshake && p[5] == typeServerHello &&
		bytes.Equal(p[11:11+32], helloRetryRandom)
}
