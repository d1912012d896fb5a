package amqplink

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// ConnectOptions say how Connect reaches the peer.
type ConnectOptions struct {
	// Auth is Plain (the token in SASL PLAIN) or CBS (SASL ANONYMOUS; tokens follow
	// on the $cbs node).
	Auth Auth
	// DialAddr, when set, is dialled instead of the profile's host:port; TLS still
	// verifies the profile's server name.
	DialAddr string
	// RootCAs is the operator's trust (nil: system roots); the token's caCert is added.
	RootCAs *x509.CertPool
	// VerifyTime is when the broker's certificate is checked (nil: the system clock).
	VerifyTime func() time.Time
}

// Connect opens an AMQP connection with tok's AMQP profile (TLS or WebSocket, as the
// profile says) until ctx ends. A refused token is an error wrapping ErrRefused.
func Connect(ctx context.Context, tok token.Token, o ConnectOptions) (*amqp.Conn, error) {
	p := tok.Response.Amqp
	if p == nil {
		return nil, ErrNoProfile
	}
	tlsConf, err := tlsconf.ForProfile(o.RootCAs, p.Tls, p.Host)
	if err != nil {
		return nil, err
	}
	sub := "AMQPWSB10"
	if p.Subprotocol != nil {
		sub = *p.Subprotocol
	}
	broker := link.Broker{Host: p.Host, Port: p.Port, Transport: string(p.Transport), URL: p.Url, Subprotocol: sub,
		DialAddr: o.DialAddr, VerifyTime: o.VerifyTime}
	nc, err := broker.Dial(ctx, tlsConf)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	opts := &amqp.ConnOptions{HostName: p.Host, IdleTimeout: 4 * time.Minute}
	switch o.Auth {
	case CBS:
		opts.SASLType = amqp.SASLTypeAnonymous()
	default:
		if p.Username == nil || p.Password == nil {
			nc.Close()
			return nil, errors.New("the AMQP profile has no SASL PLAIN credentials; use CBS")
		}
		opts.SASLType = amqp.SASLTypePlain(*p.Username, *p.Password)
	}
	conn, err := amqp.NewConn(ctx, nc, opts)
	if err != nil {
		return nil, fmt.Errorf("open: %w", Classify(err))
	}
	return conn, nil
}

// CBSNode is the $cbs request/response pair on one session, through which tokens are put
// on an open connection — one device's, or every leaf's of a gateway. PutToken is safe
// for concurrent use: requests are pipelined and each answer is routed to its request
// by correlation ID, so a gateway attaching a thousand leaves does not wait a round trip
// per leaf.
type CBSNode struct {
	tx      *amqp.Sender
	rx      *amqp.Receiver
	replyTo string
	timeout time.Duration

	mu      sync.Mutex
	waiting map[string]chan *amqp.Message
	err     error // set when the reply link failed; every later request fails with it
}

// OpenCBS attaches the $cbs pair on node (the profile's cbs.node).
func OpenCBS(ctx context.Context, sess *amqp.Session, node string, timeout time.Duration) (*CBSNode, error) {
	c := &CBSNode{replyTo: "cbs-" + newID(), timeout: timeout, waiting: map[string]chan *amqp.Message{}}
	var err error
	if c.tx, err = sess.NewSender(ctx, node, nil); err != nil {
		return nil, fmt.Errorf("cbs link: %w", Classify(err))
	}
	if c.rx, err = sess.NewReceiver(ctx, node, &amqp.ReceiverOptions{TargetAddress: c.replyTo, Credit: 64}); err != nil {
		return nil, fmt.Errorf("cbs link: %w", Classify(err))
	}
	go c.receive()
	return c, nil
}

// receive routes answers to their requests until the reply link ends.
func (c *CBSNode) receive() {
	for {
		resp, err := c.rx.Receive(context.Background(), nil)
		if err != nil {
			c.mu.Lock()
			c.err = Classify(err)
			for id, ch := range c.waiting {
				close(ch)
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			return
		}
		_ = c.rx.AcceptMessage(context.Background(), resp)
		if resp.Properties == nil {
			continue
		}
		id, _ := resp.Properties.CorrelationID.(string)
		c.mu.Lock()
		ch, ok := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ok {
			ch <- resp // buffered: never blocks
		} // else a late answer to a request that gave up
	}
}

// PutToken sends a CBS put-token for tok (its profile's audience and token type) and
// waits for the peer's status; 401 and 403 are errors wrapping ErrRefused.
func (c *CBSNode) PutToken(ctx context.Context, tok token.Token) error {
	p := tok.Response.Amqp
	if p == nil {
		return ErrNoProfile
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	id := newID()
	answer := make(chan *amqp.Message, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return fmt.Errorf("put-token response: %w", c.err)
	}
	c.waiting[id] = answer
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}()
	msg := &amqp.Message{
		Value:      tok.Response.Token,
		Properties: &amqp.MessageProperties{MessageID: id, ReplyTo: &c.replyTo},
		ApplicationProperties: map[string]any{
			"operation":  "put-token",
			"type":       p.Cbs.TokenType,
			"name":       p.Cbs.Audience,
			"expiration": tok.Response.ExpiresAt.Unix(),
		},
	}
	if err := c.tx.Send(ctx, msg, nil); err != nil {
		return fmt.Errorf("put-token: %w", Classify(err))
	}
	var resp *amqp.Message
	select {
	case resp = <-answer:
	case <-ctx.Done():
		return fmt.Errorf("put-token response: %w", ctx.Err())
	}
	if resp == nil {
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("put-token response: %w", err)
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

// ErrNotAccepted means the peer settled a message without accepting it (released or
// modified: not processed) — it must be sent again.
var ErrNotAccepted = errors.New("the peer did not accept the message")

// undeliverable are the conditions of a rejected outcome that are about the message
// itself, so that sending it again cannot succeed: the ones Azure's IoT device SDKs
// treat as not retryable for a message (IoT Hub rejects a message over 256 KB with
// message-size-exceeded). Any other rejection (throttling, a quota, an internal error)
// is worth sending again later.
var undeliverable = map[amqp.ErrCond]bool{
	amqp.ErrCondDecodeError:         true,
	amqp.ErrCondMessageSizeExceeded: true,
	amqp.ErrCondInvalidField:        true,
}

// SendAccepted sends msg on s and returns once the peer has accepted it. go-amqp's Send
// takes every outcome but rejected as success; here a released or modified message (or
// one settled with no outcome) is an error wrapping ErrNotAccepted, so the caller keeps
// it and sends it again; a rejected one is the peer's error, wrapping
// link.ErrUndeliverable when its condition is one of undeliverable.
func SendAccepted(ctx context.Context, s *amqp.Sender, msg *amqp.Message) error {
	receipt, err := s.SendWithReceipt(ctx, msg, nil)
	if err != nil {
		return err
	}
	state, err := receipt.Wait(ctx)
	if err != nil {
		return err
	}
	switch st := state.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateRejected:
		if st.Error == nil {
			return errors.New("the peer rejected the message")
		}
		if undeliverable[st.Error.Condition] {
			return fmt.Errorf("%w: %w", link.ErrUndeliverable, st.Error)
		}
		return st.Error
	case *amqp.StateReleased:
		return fmt.Errorf("%w: released", ErrNotAccepted)
	case *amqp.StateModified:
		return fmt.Errorf("%w: modified (delivery failed %v, undeliverable here %v)", ErrNotAccepted, st.DeliveryFailed, st.UndeliverableHere)
	default:
		return fmt.Errorf("%w: outcome %T", ErrNotAccepted, state)
	}
}

// NewMessage is m as an AMQP message with a fresh message ID, its body as one data
// section, and base then m's properties as application-properties.
func NewMessage(m telemetry.Message, base map[string]string) *amqp.Message {
	msg := &amqp.Message{Data: [][]byte{m.Body}, Properties: &amqp.MessageProperties{MessageID: newID()}}
	if len(base)+len(m.Properties) > 0 {
		msg.ApplicationProperties = make(map[string]any, len(base)+len(m.Properties))
		for k, v := range base {
			msg.ApplicationProperties[k] = v
		}
		for k, v := range m.Properties {
			msg.ApplicationProperties[k] = v
		}
	}
	return msg
}
