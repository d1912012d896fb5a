// Package jwtbroker is the target kind for MQTT brokers that authenticate clients by a
// JWT: Azure Event Grid namespaces (custom JWT, MQTT 5 enhanced authentication with
// method CUSTOM-JWT), EMQX, HiveMQ and Mosquitto with a JWT plugin. The service signs
// each device's JWT with its own issuer key; the broker verifies it against the keys
// the service publishes. Devices carry no keys for such a hub.
package jwtbroker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Name is the kind's name, as stored and as the API spells it.
const Name domain.HubKind = "jwtbroker"

// ErrNoIssuer means the service was built without issuer keys, so it cannot sign a
// jwtbroker hub's credentials.
var ErrNoIssuer = errors.New("this service has no issuer keys to sign JWTs with")

// Kind is the jwtbroker kind.
type Kind struct{}

var (
	_ target.Kind            = Kind{}
	_ target.IssuerKeysUser  = Kind{}
	_ target.CertificateKind = Kind{}
)

// UsesIssuerKeys implements target.IssuerKeysUser: the service's issuer keys sign every
// credential, so a jwtbroker hub needs a service with an issuer URL.
func (Kind) UsesIssuerKeys() bool { return true }

// Name implements target.Kind.
func (Kind) Name() domain.HubKind { return Name }

// Normalize implements target.Kind: mode jwt (the default), none of the SAS fields, and
// the kind's settings checked with their defaults written back.
func (Kind) Normalize(h *domain.Hub) error {
	if err := target.Mode(h, domain.SignJWT, domain.SignCertificate); err != nil {
		return err
	}
	switch {
	case h.PolicyName != "" || h.PolicyKey != "":
		return domain.Invalid("policyName and policyKey do not apply to a jwtbroker hub: the service's issuer key signs")
	case h.EntityPath != "" || h.IDScope != "" || h.GatewayHostName != "":
		return domain.Invalid("entityPath, idScope and gatewayHostName do not apply to a jwtbroker hub")
	case h.Transit:
		return domain.Invalid("transit does not apply to a jwtbroker hub: it has no SAS keys; the issuer keys live where the service keeps them")
	}
	s, err := decode(*h)
	if err != nil {
		return err
	}
	if err := s.CertificateSettings.Normalize(h.Mode); err != nil {
		return err
	}
	if h.Mode == domain.SignCertificate {
		return normalizeCertificate(h, s)
	}
	if err := s.normalize(h.Hostname); err != nil {
		return err
	}
	return target.EncodeSettings(h, &s)
}

// PrepareDevice implements target.Kind: no modules and no SAS keys.
func (Kind) PrepareDevice(h domain.Hub, d *domain.Device) error {
	return target.DeviceKeys(h, d)
}

// Mint implements target.Kind: a JWT for the device signed by the issuer key of the
// hub's algorithm, with the MQTT profile to present it.
func (Kind) Mint(ctx context.Context, s target.Signers, h domain.Hub, r target.Request) (target.Minted, error) {
	if err := target.NoModuleCredential(r); err != nil {
		return target.Minted{}, err
	}
	if err := target.NoTokens(h); err != nil {
		return target.Minted{}, err
	}
	if r.Transport == signer.WebSocket {
		return target.Minted{}, domain.Invalid("transport: jwtbroker hub %q is reached over MQTT on TLS (tcp), not WebSocket", h.Name)
	}
	if s.Issuer == nil {
		return target.Minted{}, fmt.Errorf("hub %q: %w", h.Name, ErrNoIssuer)
	}
	set, err := decode(h)
	if err != nil {
		return target.Minted{}, fmt.Errorf("hub %q: stored settings: %w", h.Name, err)
	}
	id := r.Device.ID
	claims, err := Claims(set, s.Issuer.Issuer(), id, r.Now, r.TTL)
	if err != nil {
		return target.Minted{}, fmt.Errorf("hub %q: %w", h.Name, err)
	}
	tok, _, err := s.Issuer.SignJWT(ctx, set.Algorithm, claims)
	if err != nil {
		return target.Minted{}, err
	}
	return target.Minted{
		Token: signer.Token{
			Value:     tok,
			Resource:  set.Audience,
			IssuedAt:  r.Now,
			ExpiresAt: time.Unix(claims["exp"].(int64), 0).UTC(),
		},
		Profiles:      signer.Profiles{MQTT: profile(set, h.Hostname, id, tok)},
		TLSServerName: h.Hostname,
		CACert:        h.CACert,
	}, nil
}

// Claims returns the claims of device id's JWT: the expanded claim templates of s, then
// the registered claims (which win over any template): iss, sub = id, aud, iat and nbf
// (now), exp = iat + ttl (Unix seconds) and a random jti.
func Claims(s Settings, issuer, id string, now time.Time, ttl time.Duration) (map[string]any, error) {
	claims := make(map[string]any, 8)
	if len(s.Claims) > 0 {
		// Members stay JSON text, so numbers reach the JWT as the operator wrote them.
		var extra map[string]json.RawMessage
		if err := json.Unmarshal(expandJSON(s.Claims, id), &extra); err != nil {
			return nil, fmt.Errorf("stored claims: %w", err)
		}
		for k, v := range extra {
			claims[k] = v
		}
	}
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // crypto/rand.Read never fails (Go 1.24+)
	claims["iss"] = issuer
	claims["sub"] = id
	claims["aud"] = s.Audience
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix() // Event Grid requires nbf
	claims["exp"] = now.Add(ttl).Unix()
	claims["jti"] = base64.RawURLEncoding.EncodeToString(jti[:])
	return claims, nil
}

// expandJSON replaces the placeholder in the JSON text of claim templates. Outside a
// string a JSON text cannot hold "{deviceId}", so every match is inside one (a value or
// a member name); id is inserted JSON-escaped.
func expandJSON(text []byte, id string) []byte {
	q, _ := json.Marshal(id) // a string always marshals
	return bytes.ReplaceAll(text, []byte(Placeholder), q[1:len(q)-1])
}

// profile is the MQTT profile that presents tok for device id.
func profile(s Settings, host, id, tok string) *signer.MQTT {
	p := &signer.MQTT{
		Host:            host,
		Port:            s.Port,
		Transport:       signer.TCP,
		URL:             "mqtts://" + net.JoinHostPort(host, strconv.Itoa(s.Port)),
		ClientID:        expand(s.ClientIDTemplate, id),
		Username:        expand(s.UsernameTemplate, id),
		Password:        tok,
		ProtocolVersion: s.MQTTVersion,
		Topics: signer.MQTTTopics{
			Publish:   expand(s.TopicTemplate, id),
			Subscribe: make([]string, len(s.SubscribeTemplates)),
		},
	}
	for i, f := range s.SubscribeTemplates {
		p.Topics.Subscribe[i] = expand(f, id)
	}
	if s.AuthMethod != "" {
		// MQTT 5 enhanced authentication: the token is the CONNECT's authentication
		// data, not the password.
		p.AuthMethod, p.Password = s.AuthMethod, ""
	}
	return p
}
