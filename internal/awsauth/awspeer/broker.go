// Package awspeer is a stand-in for AWS IoT Core's custom authentication, for tests: a
// mochi-mqtt broker over TLS on loopback that, like AWS IoT Core on port 443, refuses
// any client that does not negotiate ALPN "mqtt"; checks the custom authorizer's name
// and, when signing is on, the token's signature against the authorizer's
// token-signing keys; builds the documented MQTT event from the CONNECT; calls the
// authorizer (in process); enforces the returned policy on CONNECT, PUBLISH, SUBSCRIBE
// and delivery; calls the authorizer again at refreshAfterInSeconds; and disconnects at
// disconnectAfterInSeconds. MQTT over WebSocket (wss://…/mqtt, the values in the
// upgrade's headers or query string) is served too. Fixture runs it with tokensvc
// itself. Only tests import it.
package awspeer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/mochitls"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
)

// Handler is a custom authorizer's Lambda function.
type Handler func(context.Context, awsauth.Request) (awsauth.Response, error)

// Options configure a Broker: the endpoint's certificate and the authorizer resource
// (as aws iot create-authorizer would), and the account the policies name.
type Options struct {
	Cert tls.Certificate
	// Authorizer is the authorizer's function; AuthorizerName and TokenKeyName its
	// resource's name and token key name.
	Authorizer                   Handler
	AuthorizerName, TokenKeyName string
	// SigningKeys are the token-signing public keys; none means signing disabled.
	SigningKeys []*rsa.PublicKey
	// Region and AccountID are the ARNs' (arn:aws:iot:{Region}:{AccountID}:…).
	Region, AccountID string
	// MinSeconds is the least disconnectAfterInSeconds / refreshAfterInSeconds taken
	// (AWS: 300); tests lower it to see a disconnection in seconds.
	MinSeconds int
}

// Reasons a connection is refused (keys of Stats.Refused).
const (
	RefusedALPN       = "tls or alpn"
	RefusedAuthorizer = "authorizer name"
	RefusedSignature  = "token signature"
	RefusedLambda     = "not authenticated"
	RefusedResponse   = "invalid authorizer response"
	RefusedConnect    = "iot:Connect denied"
)

// Published is a message the broker accepted.
type Published struct {
	ClientID, Topic string
	Payload         []byte
}

// Stats are what the broker saw.
type Stats struct {
	Accepted int
	Refused  map[string]int
	// Denied counts publishes and subscriptions the policy did not allow; Dropped the
	// connections closed at disconnectAfterInSeconds or by a refused refresh.
	Denied, Dropped int
	// Events are the authorizer events sent, Responses the answers.
	Events    []awsauth.Request
	Responses []awsauth.Response
}

// Broker is the stand-in.
type Broker struct {
	// Addr is the TLS listener's address (MQTT, ALPN "mqtt"); WSAddr the HTTPS
	// listener's: MQTT over WebSocket at /mqtt, HTTPS publish at /topics/{topic}.
	Addr, WSAddr string

	o   Options
	srv *mqtt.Server

	mu        sync.Mutex
	stats     Stats
	published []Published
	sessions  map[*mqtt.Client]*session
	// ws tracks the WebSocket connections, which must end before mochi closes.
	ws     sync.WaitGroup
	wsConn map[net.Conn]bool
	closed bool
	// offline holds the policy of a persistent session (clean session off) whose
	// client is away: messages for it are queued, as AWS IoT Core queues them.
	offline map[string]Policy
}

type session struct {
	policy    awsauth.Response
	allow     Policy
	event     awsauth.Request
	timers    []*time.Timer
	subscribe map[string]bool // filters of the SUBSCRIBE being processed
}

var principalRE = regexp.MustCompile(`^[a-zA-Z0-9]{1,128}$`)

// Start starts a broker on loopback; it stops when the test ends.
func Start(tb testing.TB, o Options) *Broker {
	tb.Helper()
	if o.MinSeconds == 0 {
		o.MinSeconds = awsauth.AWSMinSeconds
	}
	b := &Broker{o: o, sessions: map[*mqtt.Client]*session{}, offline: map[string]Policy{},
		wsConn: map[net.Conn]bool{}}
	b.stats.Refused = map[string]int{}
	b.srv = mochitls.New(tb, newHook(b))
	conf := &tls.Config{Certificates: []tls.Certificate{o.Cert}, MinVersion: tls.VersionTLS12,
		NextProtos: []string{awsiot.ALPNProtocol}, VerifyConnection: requireALPN}
	b.Addr = mochitls.Listen(tb, b.srv, mochitls.Listener{ID: "aws-custom-auth", TLS: conf,
		Refused: func(error) { b.refuse(RefusedALPN) }})
	mux := http.NewServeMux()
	mux.HandleFunc(awsiot.WebSocketPath, b.serveWS)
	mux.HandleFunc("/topics/", b.serveHTTPS)
	var ws *http.Server
	b.WSAddr, ws = mochitls.ListenWS(tb, b.srv, "aws-ws",
		&tls.Config{Certificates: []tls.Certificate{o.Cert}, MinVersion: tls.VersionTLS12}, mux)
	mochitls.Serve(tb, b.srv, func() {
		_ = ws.Close()
		// mochi's Close must not race a connection still being established: end the
		// WebSocket connections (hijacked, so ws.Close leaves them) and wait for them.
		b.mu.Lock()
		b.closed = true
		for c := range b.wsConn {
			c.Close()
		}
		b.mu.Unlock()
		b.ws.Wait()
	})
	return b
}

// Stats returns a snapshot of what the broker saw.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Refused = make(map[string]int, len(b.stats.Refused))
	for k, v := range b.stats.Refused {
		s.Refused[k] = v
	}
	s.Events = append([]awsauth.Request(nil), b.stats.Events...)
	s.Responses = append([]awsauth.Response(nil), b.stats.Responses...)
	return s
}

// Published returns the messages accepted so far.
func (b *Broker) Published() []Published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Published(nil), b.published...)
}

// Send publishes payload to topic from the cloud side (delivered where policies allow).
func (b *Broker) Send(topic string, payload []byte) error {
	return b.srv.Publish(topic, payload, false, 1)
}

func (b *Broker) refuse(reason string) {
	b.mu.Lock()
	b.stats.Refused[reason]++
	b.mu.Unlock()
}

func (b *Broker) arn(resource string) string {
	return "arn:aws:iot:" + b.o.Region + ":" + b.o.AccountID + ":" + resource
}

// authenticate does what AWS IoT Core does with a CONNECT on the custom-auth endpoint;
// it returns the session, or the reason for refusing.
func (b *Broker) authenticate(cl *mqtt.Client, pk packets.Packet) (*session, string) {
	username := string(pk.Connect.Username)
	mq := &awsauth.MQTTData{Username: username, ClientID: string(pk.Connect.ClientIdentifier)}
	if pk.Connect.PasswordFlag {
		mq.Password = base64.StdEncoding.EncodeToString(pk.Connect.Password)
	}
	var ev awsauth.Request
	if u, ok := cl.Net.Conn.(*upgraded); ok {
		// Over WebSocket the upgrade request carried (and had checked) the values.
		ev = wsEvent(u, mq, rand.Text())
	} else {
		_, query, _ := strings.Cut(username, "?")
		q, _ := url.ParseQuery(query)
		if q.Get(awsiot.ParamAuthorizerName) != b.o.AuthorizerName {
			return nil, RefusedAuthorizer
		}
		ev = awsauth.Request{
			Protocols:          []string{"tls", "mqtt"},
			ProtocolData:       awsauth.ProtocolData{MQTT: mq},
			ConnectionMetadata: awsauth.ConnectionMetadata{ID: rand.Text()},
		}
		if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
			ev.ProtocolData.TLS = &awsauth.TLSData{ServerName: tc.ConnectionState().ServerName}
		}
		b.mu.Lock()
		signing := len(b.o.SigningKeys) > 0
		b.mu.Unlock()
		if signing {
			tok := q.Get(b.o.TokenKeyName)
			sig, err := base64.StdEncoding.DecodeString(q.Get(awsiot.ParamSignature))
			if tok == "" || err != nil || !b.verify([]byte(tok), sig) {
				return nil, RefusedSignature
			}
			ev.Token, ev.SignatureVerified = tok, true
		}
	}
	s := &session{event: ev}
	if reason := b.invoke(s); reason != "" {
		return nil, reason
	}
	if !s.allow.Allowed("iot:Connect", b.arn("client/"+cl.ID)) {
		return nil, RefusedConnect
	}
	return s, ""
}

// AddSigningKey adds a token-signing key, as aws iot update-authorizer does when the
// issuer rotates its key.
func (b *Broker) AddSigningKey(k *rsa.PublicKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.o.SigningKeys = append(b.o.SigningKeys, k)
}

// verify checks sig against the token-signing keys, as AWS IoT Core does.
func (b *Broker) verify(tok, sig []byte) bool {
	sum := sha256.Sum256(tok)
	b.mu.Lock()
	keys := b.o.SigningKeys
	b.mu.Unlock()
	for _, k := range keys {
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil {
			return true
		}
	}
	return false
}

// invoke calls the authorizer with s's event and takes its answer into s.
func (b *Broker) invoke(s *session) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // AWS's limit
	defer cancel()
	res, err := b.o.Authorizer(ctx, s.event)
	b.mu.Lock()
	b.stats.Events = append(b.stats.Events, s.event)
	b.stats.Responses = append(b.stats.Responses, res)
	b.mu.Unlock()
	if err != nil || !res.IsAuthenticated {
		return RefusedLambda
	}
	if !principalRE.MatchString(res.PrincipalID) || len(res.PolicyDocuments) > 10 ||
		!b.inBounds(res.DisconnectAfterInSeconds) || !b.inBounds(res.RefreshAfterInSeconds) {
		return RefusedResponse
	}
	for _, d := range res.PolicyDocuments {
		if len(d) > 2048 {
			return RefusedResponse
		}
	}
	p, err := ParsePolicies(res.PolicyDocuments)
	if err != nil {
		return RefusedResponse
	}
	b.mu.Lock()
	s.policy, s.allow = res, p
	b.mu.Unlock()
	return ""
}

func (b *Broker) inBounds(n int) bool { return n >= b.o.MinSeconds && n <= awsauth.AWSMaxSeconds }

// schedule arms the disconnection and the refresh of cl's session.
func (b *Broker) schedule(cl *mqtt.Client, s *session) {
	drop := func() {
		b.mu.Lock()
		_, open := b.sessions[cl]
		if open {
			b.stats.Dropped++
		}
		b.mu.Unlock()
		if open {
			cl.Stop(errors.New("custom authorizer: connection lifetime over"))
		}
	}
	var refresh func()
	refresh = func() {
		if b.invoke(s) != "" {
			drop()
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, open := b.sessions[cl]; open {
			s.timers = append(s.timers, time.AfterFunc(time.Duration(s.policy.RefreshAfterInSeconds)*time.Second, refresh))
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// disconnectAfterInSeconds is for the connection's life; refreshes do not move it.
	s.timers = append(s.timers,
		time.AfterFunc(time.Duration(s.policy.DisconnectAfterInSeconds)*time.Second, drop),
		time.AfterFunc(time.Duration(s.policy.RefreshAfterInSeconds)*time.Second, refresh))
}

// errNoALPN refuses a handshake without ALPN "mqtt", as AWS IoT Core's port 443 does
// for custom-authenticated MQTT.
var errNoALPN = errors.New("ALPN " + awsiot.ALPNProtocol + " required")

func requireALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != awsiot.ALPNProtocol {
		return errNoALPN
	}
	return nil
}
