package awspeer

import (
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/target/awsiot"
)

// alpnListener hands mochi only connections that completed a TLS handshake with ALPN
// "mqtt", as AWS IoT Core's port 443 requires for custom-authenticated MQTT.
type alpnListener struct {
	net.Listener
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	refuse func()
}

func newALPNListener(inner net.Listener, refuse func()) *alpnListener {
	l := &alpnListener{Listener: inner, conns: make(chan net.Conn), done: make(chan struct{}), refuse: refuse}
	go l.accept()
	return l
}

func (l *alpnListener) accept() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.Close()
			return
		}
		go func() {
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != awsiot.ALPNProtocol {
				l.refuse()
				tc.Close()
				return
			}
			_ = tc.SetDeadline(time.Time{})
			select {
			case l.conns <- tc:
			case <-l.done:
				tc.Close()
			}
		}()
	}
}

func (l *alpnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *alpnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}
