// Package wsconn carries a byte stream (MQTT or AMQP) over a WebSocket, as IoT Hub serves
// both on port 443 at /$iothub/websocket, and adapts the WebSocket to a net.Conn.
package wsconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Dial opens a WebSocket to url (wss://host[:port]/path) offering subprotocol. dialAddr,
// when set, is the TCP address actually dialled; TLS and the Host header still name
// url's host (like curl --resolve).
func Dial(ctx context.Context, url, subprotocol string, tlsConfig *tls.Config, dialAddr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: 30 * time.Second}
	d := &websocket.Dialer{
		TLSClientConfig:  tlsConfig,
		Subprotocols:     []string{subprotocol},
		HandshakeTimeout: 30 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dialAddr != "" {
				addr = dialAddr
			}
			return nd.DialContext(ctx, network, addr)
		},
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket handshake: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("websocket: %w", err)
	}
	if ws.Subprotocol() != subprotocol {
		ws.Close()
		return nil, fmt.Errorf("websocket: server chose subprotocol %q, want %q", ws.Subprotocol(), subprotocol)
	}
	return New(ws), nil
}

// Accept upgrades an HTTP request to a WebSocket speaking subprotocol and returns it as
// a net.Conn; test peers use it to serve MQTT or AMQP over WebSocket.
func Accept(w http.ResponseWriter, r *http.Request, subprotocol string) (net.Conn, error) {
	up := websocket.Upgrader{Subprotocols: []string{subprotocol}}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	if ws.Subprotocol() != subprotocol {
		ws.Close()
		return nil, errors.New("client did not offer the subprotocol")
	}
	return New(ws), nil
}

// New adapts ws to a net.Conn that writes each Write as one binary message and reads
// messages as one stream.
func New(ws *websocket.Conn) net.Conn {
	return &conn{ws: ws}
}

type conn struct {
	ws  *websocket.Conn
	rmu sync.Mutex
	r   io.Reader
	wmu sync.Mutex
}

func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("websocket: text message on a binary stream")
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *conn) Close() error                      { return c.ws.Close() }
func (c *conn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline shares the writers' lock: gorilla keeps the write deadline in a field
// its writers read.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.SetWriteDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}
