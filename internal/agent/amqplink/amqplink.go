// Package amqplink sends telemetry to IoT Hub over AMQP 1.0 with the tokens the keeper
// provides. Two ways to authenticate, both as IoT Hub defines them:
//
//   - SASL PLAIN: user {deviceId}@sas.{shortHubName}, password the token. SASL happens
//     once per connection, so a new token means a new connection, made as soon as the
//     token arrives (well before the old one expires).
//   - CBS: SASL ANONYMOUS, then a put-token on the $cbs node before the telemetry link
//     attaches, and again on the open connection whenever a new token arrives.
//
// Messages go to the token's link address (/devices/{id}/messages/events) and are
// counted as sent when the hub accepts them.
package amqplink

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
)

// Errors returned by Run and seen in logs.
var (
	// ErrNoProfile means the token carries no AMQP profile.
	ErrNoProfile = errors.New("the token has no AMQP profile")
	// ErrRefused means the peer refused the token (SASL outcome or CBS status).
	ErrRefused = errors.New("the peer refused the token")
)

// Auth is how the token reaches the peer.
type Auth string

// Auth modes.
const (
	Plain Auth = "plain"
	CBS   Auth = "cbs"
)

// TokenSource provides the current token.
type TokenSource interface {
	// Current returns the token (ok false while there is none) and a channel closed
	// when it is replaced.
	Current() (t token.Token, changed <-chan struct{}, ok bool)
	// Invalidate reports that the peer refused the current token.
	Invalidate()
}

// Options configure a Link.
type Options struct {
	Source   TokenSource
	Messages <-chan telemetry.Message
	Auth     Auth
	// DialAddr, when set, is dialled instead of the profile's host:port; TLS still
	// verifies the profile's server name.
	DialAddr string
	// RootCAs is the operator's trust (nil: system roots); the token's caCert is added.
	RootCAs *x509.CertPool
	// Properties are added to every message's application-properties.
	Properties map[string]string
	Backoff    backoff.Policy
	// Timeout bounds connecting, put-token and each send.
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// Stats count what a Link did.
type Stats struct {
	// Connects counts opened connections; Rotations the reconnects made for a new token
	// (PLAIN); Renewals the put-tokens on an open connection (CBS, after the first);
	// Lost the connections that broke; Refused the refused tokens; Sent the accepted
	// messages.
	Connects, Rotations, Renewals, Lost, Refused, Sent int
}

// Link is one device's AMQP connection.
type Link struct {
	o   Options
	log *slog.Logger

	mu    sync.Mutex
	stats Stats
}

// New returns a Link for o.
func New(o Options) *Link {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Backoff.Min == 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: 2 * time.Minute}
	}
	if o.Auth == "" {
		o.Auth = Plain
	}
	return &Link{o: o, log: o.Logger.With("link", "amqp", "auth", string(o.Auth))}
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

func (l *Link) count(f func(*Stats)) {
	l.mu.Lock()
	f(&l.stats)
	l.mu.Unlock()
}

// session is one open connection with its telemetry sender and, with CBS, its $cbs pair.
type session struct {
	conn    *amqp.Conn
	sess    *amqp.Session
	sender  *amqp.Sender
	cbsTx   *amqp.Sender
	cbsRx   *amqp.Receiver
	replyTo string
}

func (s *session) close() {
	if s.conn != nil {
		s.conn.Close()
	}
}

// Run keeps the link up until ctx ends; it returns nil then, or an error that retrying
// cannot fix.
func (l *Link) Run(ctx context.Context) error {
	var (
		pending  *telemetry.Message
		failures int
	)
	for ctx.Err() == nil {
		tok, changed, ok := token.AwaitValid(ctx, l.o.Source.Current, l.o.Now, l.log)
		if !ok {
			return nil
		}
		if tok.Response.Amqp == nil {
			return ErrNoProfile
		}
		s, err := l.connect(ctx, tok)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			if errors.Is(err, ErrRefused) {
				l.count(func(st *Stats) { st.Refused++ })
				l.o.Source.Invalidate()
			}
			d := l.o.Backoff.Delay(failures, 0)
			l.log.Warn("connect failed", "error", err.Error(), "attempt", failures, "retryIn", d.Round(time.Millisecond).String())
			token.Sleep(ctx, d, changed) // a new token is worth trying at once
			continue
		}
		failures = 0
		l.count(func(st *Stats) { st.Connects++ })
		l.log.Info("connected", "host", tok.Response.Amqp.Host, "transport", string(tok.Response.Amqp.Transport),
			"tokenValidFor", tok.Remaining(l.o.Now()).Round(time.Second).String())

		err = l.serve(ctx, s, tok, changed, &pending)
		s.close()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errRotate):
			l.count(func(st *Stats) { st.Rotations++ })
			l.log.Info("new token; reconnecting with it", "oldTokenValidFor", tok.Remaining(l.o.Now()).Round(time.Millisecond).String())
		default:
			l.count(func(st *Stats) { st.Lost++ })
			if errors.Is(err, ErrRefused) {
				l.count(func(st *Stats) { st.Refused++ })
				l.o.Source.Invalidate()
			}
			l.log.Warn("connection lost", "error", err.Error(), "tokenValidFor", tok.Remaining(l.o.Now()).Round(time.Millisecond).String())
			token.Sleep(ctx, l.o.Backoff.Delay(1, 0), nil)
		}
	}
	return nil
}

var errRotate = errors.New("rotate")

// serve sends messages until ctx ends, the connection breaks, or (PLAIN) a new token
// arrives. With CBS a new token is put on the open connection.
func (l *Link) serve(ctx context.Context, s *session, tok token.Token, changed <-chan struct{}, pending **telemetry.Message) error {
	for {
		if *pending != nil {
			if err := l.send(ctx, s, tok, **pending); err != nil {
				return err
			}
			*pending = nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.conn.Done():
			if err := s.conn.Err(); err != nil {
				return classify(err)
			}
			return errors.New("connection closed")
		case <-changed:
			if l.o.Auth != CBS {
				return errRotate
			}
			next, ch, ok := l.o.Source.Current()
			if !ok {
				continue
			}
			if err := l.putToken(ctx, s, next); err != nil {
				return fmt.Errorf("renew token: %w", err)
			}
			tok, changed = next, ch
			l.count(func(st *Stats) { st.Renewals++ })
			l.log.Info("token renewed on the open connection", "tokenValidFor", tok.Remaining(l.o.Now()).Round(time.Second).String())
		case m, ok := <-l.o.Messages:
			if !ok {
				l.o.Messages = nil
				continue
			}
			*pending = &m
		}
	}
}

func (l *Link) send(ctx context.Context, s *session, _ token.Token, m telemetry.Message) error {
	msg := &amqp.Message{Data: [][]byte{m.Body}, Properties: &amqp.MessageProperties{MessageID: newID()}}
	if len(l.o.Properties)+len(m.Properties) > 0 {
		msg.ApplicationProperties = make(map[string]any, len(l.o.Properties)+len(m.Properties))
		for k, v := range l.o.Properties {
			msg.ApplicationProperties[k] = v
		}
		for k, v := range m.Properties {
			msg.ApplicationProperties[k] = v
		}
	}
	sctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	if err := s.sender.Send(sctx, msg, nil); err != nil {
		return fmt.Errorf("send: %w", classify(err))
	}
	l.count(func(st *Stats) { st.Sent++ })
	return nil
}

func (l *Link) connect(ctx context.Context, tok token.Token) (*session, error) {
	p := tok.Response.Amqp
	serverName, caCert := p.Host, ""
	if p.Tls != nil {
		serverName = p.Tls.ServerName
		if p.Tls.CaCert != nil {
			caCert = *p.Tls.CaCert
		}
	}
	tlsConf, err := tlsconf.ForBroker(l.o.RootCAs, caCert, serverName)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()

	var nc net.Conn
	if p.Transport == "ws" {
		sub := "AMQPWSB10"
		if p.Subprotocol != nil {
			sub = *p.Subprotocol
		}
		nc, err = wsconn.Dial(cctx, p.Url, sub, tlsConf, l.o.DialAddr)
	} else {
		addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
		if l.o.DialAddr != "" {
			addr = l.o.DialAddr
		}
		d := &tls.Dialer{Config: tlsConf}
		nc, err = d.DialContext(cctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}

	opts := &amqp.ConnOptions{HostName: p.Host, IdleTimeout: 4 * time.Minute}
	switch l.o.Auth {
	case CBS:
		opts.SASLType = amqp.SASLTypeAnonymous()
	default:
		if p.Username == nil || p.Password == nil {
			nc.Close()
			return nil, errors.New("the AMQP profile has no SASL PLAIN credentials; use CBS")
		}
		opts.SASLType = amqp.SASLTypePlain(*p.Username, *p.Password)
	}
	conn, err := amqp.NewConn(cctx, nc, opts)
	if err != nil {
		return nil, fmt.Errorf("open: %w", classify(err))
	}
	s := &session{conn: conn}
	if s.sess, err = conn.NewSession(cctx, nil); err != nil {
		s.close()
		return nil, fmt.Errorf("session: %w", classify(err))
	}
	if l.o.Auth == CBS {
		if s.cbsTx, err = s.sess.NewSender(cctx, p.Cbs.Node, nil); err != nil {
			s.close()
			return nil, fmt.Errorf("cbs link: %w", classify(err))
		}
		s.replyTo = "cbs-" + newID()
		if s.cbsRx, err = s.sess.NewReceiver(cctx, p.Cbs.Node, &amqp.ReceiverOptions{TargetAddress: s.replyTo}); err != nil {
			s.close()
			return nil, fmt.Errorf("cbs link: %w", classify(err))
		}
		if err := l.putToken(cctx, s, tok); err != nil {
			s.close()
			return nil, err
		}
	}
	if s.sender, err = s.sess.NewSender(cctx, p.Address, nil); err != nil {
		s.close()
		return nil, fmt.Errorf("telemetry link: %w", classify(err))
	}
	return s, nil
}

// putToken sends a CBS put-token for tok and waits for the peer's status.
func (l *Link) putToken(ctx context.Context, s *session, tok token.Token) error {
	p := tok.Response.Amqp
	ctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	id := newID()
	msg := &amqp.Message{
		Value:      tok.Response.Token,
		Properties: &amqp.MessageProperties{MessageID: id, ReplyTo: &s.replyTo},
		ApplicationProperties: map[string]any{
			"operation":  "put-token",
			"type":       p.Cbs.TokenType,
			"name":       p.Cbs.Audience,
			"expiration": tok.Response.ExpiresAt.Unix(),
		},
	}
	if err := s.cbsTx.Send(ctx, msg, nil); err != nil {
		return fmt.Errorf("put-token: %w", classify(err))
	}
	for {
		resp, err := s.cbsRx.Receive(ctx, nil)
		if err != nil {
			return fmt.Errorf("put-token response: %w", classify(err))
		}
		_ = s.cbsRx.AcceptMessage(ctx, resp)
		if resp.Properties == nil || resp.Properties.CorrelationID != id {
			continue // a late answer to an earlier request
		}
		code, desc := statusOf(resp.ApplicationProperties)
		if code == 200 || code == 202 {
			return nil
		}
		if code == 401 || code == 403 {
			return fmt.Errorf("%w: put-token status %d %s", ErrRefused, code, desc)
		}
		return fmt.Errorf("put-token status %d %s", code, desc)
	}
}

func statusOf(props map[string]any) (int, string) {
	var code int
	switch v := props["status-code"].(type) {
	case int32:
		code = int(v)
	case int64:
		code = int(v)
	case int:
		code = v
	case uint32:
		code = int(v)
	}
	desc, _ := props["status-description"].(string)
	return code, desc
}

// classify marks authentication failures with ErrRefused.
func classify(err error) error {
	var ce *amqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil && ce.RemoteErr.Condition == amqp.ErrCondUnauthorizedAccess {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil && le.RemoteErr.Condition == amqp.ErrCondUnauthorizedAccess {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	// go-amqp reports a failed SASL outcome only as text.
	if strings.Contains(err.Error(), "auth failed") {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return err
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
