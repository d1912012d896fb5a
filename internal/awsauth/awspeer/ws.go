package awspeer

import (
	"encoding/base64"
	"net"
	"net/http"
	"strings"

	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
)

// MQTT over WebSocket: AWS IoT Core takes the custom authorizer's values as headers or
// query parameters of the upgrade request to /mqtt, checks the authorizer name and the
// signature there, and sends the authorizer the HTTP data with the CONNECT's.

// upgraded is a WebSocket connection with what its upgrade request carried.
type upgraded struct {
	net.Conn
	http       awsauth.HTTPData
	serverName string
	token      string
	verified   bool
}

// serveWS handles the upgrade to MQTT over WebSocket.
func (b *Broker) serveWS(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	param := func(name string) string {
		if v := r.Header.Get(name); v != "" {
			return v
		}
		return q.Get(name)
	}
	if param(awsiot.ParamAuthorizerName) != b.o.AuthorizerName {
		b.refuse(RefusedAuthorizer)
		http.Error(w, "unknown authorizer", http.StatusUnauthorized)
		return
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
			b.refuse(RefusedSignature)
			http.Error(w, "bad token signature", http.StatusUnauthorized)
			return
		}
		u.token, u.verified = tok, true
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
