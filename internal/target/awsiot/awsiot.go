// Package awsiot is the AWS IoT Core target kind, through a custom authorizer: a
// device's credential is a JWT signed by the service's RSA issuer key (iss the service,
// sub the device ID — its MQTT client ID —, aud the AWS IoT data endpoint) together with
// the authorizer's token signature, and the profiles carry them the way AWS IoT Core
// documents: MQTT on port 443 with TLS ALPN "mqtt" and the token in the CONNECT user
// name's query string (or in the password, when the authorizer does not require
// signing), MQTT over WebSocket with the values in the upgrade URL's query string, and
// HTTPS publish with them as headers. The authorizer Lambda that checks these tokens is
// cmd/awsauthorizer.
package awsiot

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// KindName is the hub kind's name.
const KindName domain.HubKind = "awsiot"

// Names of the custom authorizer parameters AWS IoT Core reads (query parameters of the
// MQTT user name or the WebSocket URL, or HTTP headers).
const (
	ParamAuthorizerName = "x-amz-customauthorizer-name"
	ParamSignature      = "x-amz-customauthorizer-signature"
)

// Port is where AWS IoT Core takes custom-authenticated MQTT (with ALPN ALPNProtocol),
// MQTT over WebSocket and HTTPS.
const (
	Port         = 443
	ALPNProtocol = "mqtt"
	// WebSocketPath is AWS IoT Core's MQTT over WebSocket path.
	WebSocketPath = "/mqtt"
)

// ErrNoIssuer means the service has no issuer keys to sign with.
var ErrNoIssuer = errors.New("the service has no issuer keys")

// Claims are the JWT's claims, in the order they are written.
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	ID        string `json:"jti"`
}

// Kind is the awsiot kind.
type Kind struct{}

var (
	_ target.Kind            = Kind{}
	_ target.IssuerKeysUser  = Kind{}
	_ target.CertificateKind = Kind{}
)

// Name implements target.Kind.
func (Kind) Name() domain.HubKind { return KindName }

// UsesIssuerKeys implements target.IssuerKeysUser: the service's issuer keys sign.
func (Kind) UsesIssuerKeys() bool { return true }

// Normalize implements target.Kind: mode customAuthorizer (the default), the
// authorizer's name and token key name, topic templates that name the device, and none
// of the Azure fields.
func (Kind) Normalize(h *domain.Hub) error {
	if err := target.Mode(h, domain.SignCustomAuthorizer, domain.SignCertificate); err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{
		{"policyName", h.PolicyName}, {"policyKey", h.PolicyKey}, {"entityPath", h.EntityPath},
		{"idScope", h.IDScope}, {"gatewayHostName", h.GatewayHostName},
	} {
		if f.value != "" {
			return domain.Invalid("%s: does not apply to an awsiot hub", f.name)
		}
	}
	if h.Transit {
		return domain.Invalid("transit: an awsiot hub has no SAS keys to keep in Transit; its tokens are signed with the service's issuer key")
	}
	s, err := settingsOf(*h)
	if err != nil {
		return err
	}
	return target.EncodeSettings(h, &s)
}

// settingsOf decodes and checks h's settings, defaults filled in.
func settingsOf(h domain.Hub) (Settings, error) {
	var s Settings
	if err := target.DecodeSettings(h, &s); err != nil {
		return Settings{}, err
	}
	if err := s.check(h.Mode); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// PrepareDevice implements target.Kind: no modules, no SAS keys, and a device ID that
// AWS IoT policies take literally (no * ? or $, which they read as wildcards and
// variables).
func (Kind) PrepareDevice(h domain.Hub, d *domain.Device) error {
	if err := target.NoModules(h, d); err != nil {
		return err
	}
	if d.PrimaryKey != "" || d.SecondaryKey != "" {
		return domain.Invalid("primaryKey: awsiot hub %q signs with the service's issuer key; devices take no keys", h.Name)
	}
	if strings.ContainsAny(d.ID, "*?$") {
		return domain.Invalid("deviceId: on an awsiot hub a device ID holds no * ? or $ (AWS IoT policy wildcards and variables)")
	}
	return nil
}

// Mint implements target.Kind.
func (Kind) Mint(ctx context.Context, s target.Signers, h domain.Hub, r target.Request) (target.Minted, error) {
	if err := target.NoModuleCredential(r); err != nil {
		return target.Minted{}, err
	}
	if err := target.NoTokens(h); err != nil {
		return target.Minted{}, err
	}
	if s.Issuer == nil {
		return target.Minted{}, fmt.Errorf("awsiot hub %q: %w", h.Name, ErrNoIssuer)
	}
	set, err := settingsOf(h)
	if err != nil {
		// A stored hub that breaks the rules is the service's fault, not the device's:
		// not wrapped, so it is no 400 to the device.
		return target.Minted{}, fmt.Errorf("awsiot hub %q: stored settings: %v", h.Name, err)
	}
	id := r.Device.ID
	iat := r.Now.Unix()
	exp := r.Now.Add(r.TTL).Unix()
	tok, kid, err := s.Issuer.SignJWT(ctx, "RS256", Claims{
		Issuer: s.Issuer.Issuer(), Subject: id, Audience: h.Hostname,
		IssuedAt: iat, ExpiresAt: exp, ID: rand.Text(),
	})
	if err != nil {
		return target.Minted{}, fmt.Errorf("sign the token of device %q: %w", id, err)
	}
	sig := ""
	if *set.Signing {
		raw, err := s.Issuer.SignPKCS1(ctx, kid, []byte(tok))
		if err != nil {
			return target.Minted{}, fmt.Errorf("sign the authorizer signature of device %q: %w", id, err)
		}
		sig = base64.StdEncoding.EncodeToString(raw)
	}
	return target.Minted{
		Token: signer.Token{
			Value: tok, Resource: h.Hostname,
			IssuedAt: r.Now, ExpiresAt: time.Unix(exp, 0).UTC(),
		},
		Profiles:      Profiles(h.Hostname, set, id, tok, sig, r.Transport),
		TLSServerName: h.Hostname,
		CACert:        h.CACert,
		Signature:     sig,
	}, nil
}

// Profiles builds the MQTT and HTTPS settings for device id's token tok with its
// signature sig ("" when the authorizer does not require signing), as AWS IoT Core's
// custom authentication documents them.
func Profiles(host string, s Settings, id, tok, sig string, t signer.Transport) signer.Profiles {
	// A JWT is base64url and dots, safe in a query string as it is; the signature is
	// standard base64, whose + / = must be escaped.
	query := ParamAuthorizerName + "=" + url.QueryEscape(s.AuthorizerName)
	if sig != "" {
		query += "&" + s.TokenKeyName + "=" + url.QueryEscape(tok) + "&" + ParamSignature + "=" + url.QueryEscape(sig)
	}
	topic := Topic(s.TopicTemplate, id)
	subs := make([]string, len(s.SubscribeTemplates))
	for i, f := range s.SubscribeTemplates {
		subs[i] = Topic(f, id)
	}
	mqtt := &signer.MQTT{
		Host: host, Port: Port, Transport: t, ClientID: id,
		ProtocolVersion: "3.1.1",
		Topics:          signer.MQTTTopics{Publish: topic, Subscribe: subs},
	}
	if t == signer.WebSocket {
		// The credentials go in the upgrade request; the CONNECT carries none.
		if sig == "" {
			query += "&" + s.TokenKeyName + "=" + url.QueryEscape(tok)
		}
		mqtt.URL = "wss://" + host + WebSocketPath + "?" + query
	} else {
		mqtt.URL = "mqtts://" + host + ":443"
		mqtt.ALPN = []string{ALPNProtocol}
		mqtt.Username = id + "?" + query
		if sig == "" {
			// Without signing AWS passes the password (base64) to the authorizer.
			mqtt.Password = tok
		}
	}
	headers := map[string]string{ParamAuthorizerName: s.AuthorizerName, s.TokenKeyName: tok}
	if sig != "" {
		headers[ParamSignature] = sig
	}
	https := &signer.HTTPS{
		URL:     "https://" + host + ":443/topics/" + escapeTopic(topic) + "?qos=1",
		Headers: headers,
	}
	return signer.Profiles{MQTT: mqtt, HTTPS: https}
}

// escapeTopic escapes each level of a topic for a URL path.
func escapeTopic(t string) string {
	levels := strings.Split(t, "/")
	for i, l := range levels {
		levels[i] = url.PathEscape(l)
	}
	return strings.Join(levels, "/")
}
