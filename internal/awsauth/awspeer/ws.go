package awspeer

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
)

// MQTT over WebSocket: AWS IoT Core takes the custom authorizer's values as headers or
// query parameters of the upgrade request to /mqtt, checks the authorizer name and the
// signature there, and sends the authorizer the HTTP data with the CONNECT's. HTTPS
// publish (POST /topics/{topic}) takes the same values, and the authorizer's policy
// decides the publish.

// upgraded is a WebSocket connection with what its upgrade request carried.
type upgraded struct {
	net.Conn
	http       awsauth.HTTPData
	serverName string
	token      string
	verified   bool
}

// checkHTTP does what AWS IoT Core does with the custom authorizer values of an HTTP
// request: the authorizer name, and the token's signature when signing is on. It
// returns the upgraded connection's data, or the reason to refuse.
func (b *Broker) checkHTTP(r *http.Request) (*upgraded, string) {
	q := r.URL.Query()
	param := func(name string) string {
		if v := r.Header.Get(name); v != "" {
			return v
		}
		return q.Get(name)
	}
	if param(awsiot.ParamAuthorizerName) != b.o.AuthorizerName {
		return nil, RefusedAuthorizer
	}
	u := &upgraded{http: awsauth.HTTPData{Headers: map[string]string{}}}
	for name, vs := range r.Header {
		u.http.Headers[strings.ToLower(name)] = vs[0]
	}
	if r.URL.RawQuery != "" {
		u.http.QueryString = "?" + r.URL.RawQuery
	}
	if r.TLS != nil {
		u.serverName = r.TLS.ServerName
	}
	b.mu.Lock()
	signing := len(b.o.SigningKeys) > 0
	b.mu.Unlock()
	if signing {
		tok := param(b.o.TokenKeyName)
		sig, err := base64.StdEncoding.DecodeString(param(awsiot.ParamSignature))
		if tok == "" || err != nil || !b.verify([]byte(tok), sig) {
			return nil, RefusedSignature
		}
		u.token, u.verified = tok, true
	}
	return u, ""
}

// serveHTTPS handles an HTTPS publish, POST /topics/{topic}?qos=1.
func (b *Broker) serveHTTPS(w http.ResponseWriter, r *http.Request) {
	topic := strings.TrimPrefix(r.URL.Path, "/topics/")
	if r.Method != http.MethodPost || topic == "" {
		http.Error(w, "POST /topics/{topic}", http.StatusNotFound)
		return
	}
	u, reason := b.checkHTTP(r)
	if reason != "" {
		b.refuse(reason)
		http.Error(w, reason, http.StatusUnauthorized)
		return
	}
	ev := wsEvent(u, nil, rand.Text())
	ev.Protocols = []string{"tls", "http"}
	s := &session{event: ev}
	if reason := b.invoke(s); reason != "" {
		b.refuse(reason)
		http.Error(w, reason, http.StatusUnauthorized)
		return
	}
	if !s.allow.Allowed("iot:Publish", b.arn("topic/"+topic)) {
		b.mu.Lock()
		b.stats.Denied++
		b.mu.Unlock()
		http.Error(w, "not authorized", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 128<<10))
	if err != nil {
		http.Error(w, "body", http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	b.stats.Accepted++
	b.published = append(b.published, Published{Topic: topic, Payload: body})
	b.mu.Unlock()
	_ = b.srv.Publish(topic, body, false, 1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"message":"OK","traceId":"` + ev.ConnectionMetadata.ID + `"}`))
}

// serveWS handles the upgrade to MQTT over WebSocket.
func (b *Broker) serveWS(w http.ResponseWriter, r *http.Request) {
	u, reason := b.checkHTTP(r)
	if reason != "" {
		b.refuse(reason)
		http.Error(w, reason, http.StatusUnauthorized)
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	}
	b.ws.Add(1)
	b.mu.Unlock()
	defer b.ws.Done()
	c, err := wsconn.Accept(w, r, "mqtt")
	if err != nil {
		return
	}
	u.Conn = c
	b.mu.Lock()
	b.wsConn[c] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.wsConn, c)
		b.mu.Unlock()
	}()
	_ = b.srv.EstablishConnection("aws-ws", u)
}

// wsEvent is the authorizer event for a CONNECT over WebSocket connection u.
func wsEvent(u *upgraded, mq *awsauth.MQTTData, id string) awsauth.Request {
	return awsauth.Request{
		Token: u.token, SignatureVerified: u.verified,
		Protocols: []string{"tls", "http", "mqtt"},
		ProtocolData: awsauth.ProtocolData{
			TLS: &awsauth.TLSData{ServerName: u.serverName}, HTTP: &u.http, MQTT: mq,
		},
		ConnectionMetadata: awsauth.ConnectionMetadata{ID: id},
	}
}
