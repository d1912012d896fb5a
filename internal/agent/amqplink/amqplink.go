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
// counted as sent when the hub accepts them. The reconnect loop is link.Loop; this
// package dials, sends and closes.
package amqplink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Errors returned by Run and seen in logs.
var (
	// ErrNoProfile means the token carries no AMQP profile.
	ErrNoProfile = errors.New("the token has no AMQP profile")
	// ErrRefused means the peer refused the token (SASL outcome or CBS status). It is
	// link.ErrRefused, which the reconnect loop acts on.
	ErrRefused = link.ErrRefused
)

// Auth is how the token reaches the peer.
type Auth string

// Auth modes.
const (
	Plain Auth = "plain"
	CBS   Auth = "cbs"
)

// Options configure a Link.
type Options struct {
	link.Common
	Auth Auth
}

// Stats count what a Link did.
type Stats struct {
	// Connects counts opened connections; Rotations the reconnects made for a new token
	// (PLAIN); Renewals the put-tokens on an open connection (CBS, after the first);
	// Lost the connections that broke; Refused the refused tokens; Sent the accepted
	// messages; Rejected the messages the peer refused for what they are (dropped).
	Connects, Rotations, Renewals, Lost, Refused, Sent, Rejected int
}

// Link is one device's AMQP connection: a link.Loop with this package's Dialer.
type Link struct {
	o              Options
	loop           *link.Loop
	sent, rejected atomic.Int64
}

var (
	_ link.Dialer  = (*Link)(nil)
	_ link.Conn    = (*session)(nil)
	_ link.Renewer = (*cbsSession)(nil)
)

// New returns a Link for o.
func New(o Options) *Link {
	o.Common = o.WithDefaults()
	if o.Auth == "" {
		o.Auth = Plain
	}
	l := &Link{o: o}
	l.loop = o.Loop(l, o.Logger.With("link", "amqp", "auth", string(o.Auth)))
	return l
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	s := l.loop.Stats()
	return Stats{Connects: s.Connects, Rotations: s.Rotations, Renewals: s.Renewals, Lost: s.Lost,
		Refused: s.Refused, Sent: int(l.sent.Load()), Rejected: int(l.rejected.Load())}
}

// Run keeps the link up until ctx ends; it returns nil then, or ErrNoProfile.
func (l *Link) Run(ctx context.Context) error { return l.loop.Run(ctx) }

// Endpoint returns the host and transport of tok's AMQP profile, or ErrNoProfile.
func (l *Link) Endpoint(tok token.Token) (host, transport string, err error) {
	p := tok.Response.Amqp
	if p == nil {
		return "", "", ErrNoProfile
	}
	return p.Host, string(p.Transport), nil
}

// session is one open connection with its telemetry sender.
type session struct {
	l      *Link
	conn   *amqp.Conn
	sess   *amqp.Session
	sender *amqp.Sender
}

// cbsSession is a session that also holds the $cbs pair, so it takes new tokens on the
// open connection.
type cbsSession struct {
	*session
	cbs *CBSNode
}

func (s *session) Close(bool) {
	if s.conn != nil {
		s.conn.Close()
	}
}

func (s *session) Done() <-chan struct{} { return s.conn.Done() }

func (s *session) Err() error {
	if err := s.conn.Err(); err != nil {
		return Classify(err)
	}
	return errors.New("connection closed")
}

// Renew puts tok on the open connection.
func (s *cbsSession) Renew(ctx context.Context, tok token.Token) error {
	if err := s.cbs.PutToken(ctx, tok); err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	return nil
}

// Send sends m to the telemetry address and waits until the peer accepts it. A message
// the peer rejects for what it is (link.ErrUndeliverable) is dropped, counted and
// logged: the connection is fine, and sending it again would be rejected again.
func (s *session) Send(ctx context.Context, m telemetry.Message) error {
	o := s.l.o
	msg := NewMessage(m, o.Properties)
	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := SendAccepted(sctx, s.sender, msg); err != nil {
		if errors.Is(err, link.ErrUndeliverable) {
			s.l.rejected.Add(1)
			s.l.o.Logger.Warn("the peer rejected a message; dropped", "link", "amqp", "error", err.Error(), "bytes", len(m.Body))
			return nil
		}
		return fmt.Errorf("send: %w", Classify(err))
	}
	s.l.sent.Add(1)
	return nil
}

// Dial connects with tok's AMQP profile: SASL PLAIN, or SASL ANONYMOUS and a CBS
// put-token before the telemetry link attaches. A refused token is an error wrapping
// ErrRefused.
func (l *Link) Dial(ctx context.Context, tok token.Token) (link.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	conn, err := Connect(cctx, tok, ConnectOptions{Auth: l.o.Auth, DialAddr: l.o.DialAddr, RootCAs: l.o.RootCAs,
		VerifyTime: l.o.VerifyTime})
	if err != nil {
		return nil, err
	}
	s := &session{l: l, conn: conn}
	if s.sess, err = conn.NewSession(cctx, nil); err != nil {
		s.Close(false)
		return nil, fmt.Errorf("session: %w", Classify(err))
	}
	var c link.Conn = s
	if l.o.Auth == CBS {
		cs := &cbsSession{session: s}
		if cs.cbs, err = OpenCBS(cctx, s.sess, tok.Response.Amqp.Cbs.Node, l.o.Timeout); err != nil {
			s.Close(false)
			return nil, err
		}
		if err := cs.cbs.PutToken(cctx, tok); err != nil {
			s.Close(false)
			return nil, err
		}
		c = cs
	}
	if s.sender, err = s.sess.NewSender(cctx, tok.Response.Amqp.Address, nil); err != nil {
		s.Close(false)
		return nil, fmt.Errorf("telemetry link: %w", Classify(err))
	}
	return c, nil
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

// Classify marks authentication failures (connection or link refused as unauthorized,
// a failed SASL outcome) with ErrRefused.
func Classify(err error) error {
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
