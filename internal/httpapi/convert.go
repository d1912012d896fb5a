package httpapi

import (
	"cmp"
	"encoding/json"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

func seconds(d time.Duration) int { return int(d / time.Second) }

func durationOf(s *int) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(*s) * time.Second
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptrIfSet[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// coreHubFields are the hub properties domain.Hub has fields of its own for; every other
// property of HubCreate and Hub belongs to the hub's kind and travels in Settings.
var coreHubFields = map[string]bool{
	"name": true, "kind": true, "hostname": true, "entityPath": true, "idScope": true,
	"mode": true, "policyName": true, "policyKey": true, "gatewayHostName": true,
	"caCert": true, "transit": true, "defaultTtlSeconds": true, "maxTtlSeconds": true,
	"createdAt": true,
}

func hubFromAPI(in oapi.HubCreate) domain.Hub {
	return domain.Hub{
		Name:            in.Name,
		Kind:            domain.HubKind(in.Kind),
		Hostname:        in.Hostname,
		EntityPath:      deref(in.EntityPath),
		IDScope:         deref(in.IdScope),
		Mode:            domain.SigningMode(deref(in.Mode)),
		PolicyName:      deref(in.PolicyName),
		PolicyKey:       deref(in.PolicyKey),
		GatewayHostName: deref(in.GatewayHostName),
		CACert:          deref(in.CaCert),
		Transit:         deref(in.Transit),
		Settings:        kindSettings(in),
		DefaultTTL:      durationOf(in.DefaultTtlSeconds),
		MaxTTL:          durationOf(in.MaxTtlSeconds),
	}
}

// kindSettings returns the kind-specific properties in carries, by name, each as the
// JSON text of its value; nil when there are none.
func kindSettings(in oapi.HubCreate) map[string]string {
	b, err := json.Marshal(in)
	if err != nil {
		return nil // generated types always marshal
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	var out map[string]string
	for name, raw := range m {
		if coreHubFields[name] {
			continue
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[name] = string(raw)
	}
	return out
}

// hubToAPI never carries the policy key.
func hubToAPI(h domain.Hub) oapi.Hub {
	out := oapi.Hub{
		Name:              h.Name,
		Kind:              oapi.HubKind(h.Kind),
		Hostname:          h.Hostname,
		EntityPath:        ptrIfSet(h.EntityPath),
		IdScope:           ptrIfSet(h.IDScope),
		Mode:              oapi.SigningMode(h.Mode),
		PolicyName:        ptrIfSet(h.PolicyName),
		GatewayHostName:   ptrIfSet(h.GatewayHostName),
		CaCert:            ptrIfSet(h.CACert),
		Transit:           ptrIfSet(h.Transit),
		DefaultTtlSeconds: seconds(h.DefaultTTL),
		MaxTtlSeconds:     seconds(h.MaxTTL),
		CreatedAt:         h.CreatedAt,
	}
	if len(h.Settings) == 0 {
		return out
	}
	// The kind's fields go back as the properties they came in as: one property at a
	// time, so a value this build's schema no longer reads drops only itself.
	for name, text := range h.Settings {
		if coreHubFields[name] {
			continue
		}
		b, err := json.Marshal(map[string]json.RawMessage{name: json.RawMessage(text)})
		if err != nil {
			continue
		}
		withField := out
		if json.Unmarshal(b, &withField) == nil {
			out = withField
		}
	}
	return out
}

func deviceFromAPI(in oapi.DeviceCreate) domain.Device {
	d := domain.Device{
		ID:           in.DeviceId,
		Hub:          in.Hub,
		PrimaryKey:   deref(in.PrimaryKey),
		SecondaryKey: deref(in.SecondaryKey),
		Auth: domain.Credential{
			Type:            domain.CredentialType(in.Auth.Type),
			PublicKey:       deref(in.Auth.PublicKey),
			CertFingerprint: deref(in.Auth.CertFingerprint),
		},
		Disabled: deref(in.Disabled),
		MaxTTL:   durationOf(in.MaxTtlSeconds),
		Gateway:  deref(in.Gateway),
		Parent:   deref(in.Parent),
	}
	for _, m := range deref(in.Modules) {
		d.Modules = append(d.Modules, domain.Module{ID: m.ModuleId, PrimaryKey: deref(m.PrimaryKey), SecondaryKey: deref(m.SecondaryKey)})
	}
	return d
}

// deviceToAPI never carries keys or the credential secret (a certificate fingerprint is
// not one).
func deviceToAPI(d domain.Device) oapi.Device {
	out := oapi.Device{
		DeviceId: d.ID,
		Hub:      d.Hub,
		Auth: oapi.Credential{
			Type:            oapi.CredentialType(d.Auth.Type),
			PublicKey:       ptrIfSet(d.Auth.PublicKey),
			CertFingerprint: ptrIfSet(d.Auth.CertFingerprint),
		},
		Disabled:  d.Disabled,
		CreatedAt: d.CreatedAt,
		UpdatedAt: d.UpdatedAt,
	}
	if d.MaxTTL > 0 {
		out.MaxTtlSeconds = ptrIfSet(seconds(d.MaxTTL))
	}
	if !d.RevokedAt.IsZero() {
		out.RevokedAt = &d.RevokedAt
	}
	if d.Gateway {
		out.Gateway = &d.Gateway
	}
	out.Parent = ptrIfSet(d.Parent)
	out.Modules = make([]struct {
		ModuleId string `json:"moduleId"`
	}, len(d.Modules))
	for i, m := range d.Modules {
		out.Modules[i].ModuleId = m.ID
	}
	return out
}

func tokenToAPI(is tokens.Issued) oapi.TokenResponse {
	// One allocation for the parts the response points to (it is built per GET /token);
	// optional strings point into is, which escapes once instead of once per field.
	parts := new(struct {
		mqtt  oapi.MqttProfile
		amqp  oapi.AmqpProfile
		https oapi.HttpsProfile
		tls   oapi.TlsSettings
	})
	p := &is.Profiles
	// serverTime, expiresIn and expiresAt agree to the second: se is whole seconds.
	serverTime := is.IssuedAt.UTC().Truncate(time.Second)
	out := oapi.TokenResponse{
		Token:            is.Token.Value,
		Resource:         is.Token.Resource,
		ExpiresAt:        is.Token.ExpiresAt,
		ExpiresIn:        seconds(is.Token.ExpiresAt.Sub(serverTime)),
		RefreshAfter:     is.RefreshAfter.UTC(),
		ServerTime:       serverTime,
		Hub:              is.Hub.Name,
		Kind:             oapi.HubKind(is.Hub.Kind),
		ConnectionString: nonEmpty(&p.ConnectionString),
	}
	tls := &parts.tls
	*tls = oapi.TlsSettings{ServerName: is.TLSServerName, CaCert: nonEmpty(&is.CACert)}
	if m := p.MQTT; m != nil {
		out.Mqtt = &parts.mqtt
		*out.Mqtt = oapi.MqttProfile{
			Host:            m.Host,
			Port:            m.Port,
			Transport:       oapi.MqttProfileTransport(m.Transport),
			Url:             m.URL,
			ClientId:        m.ClientID,
			Username:        m.Username,
			Password:        m.Password,
			ProtocolVersion: cmp.Or(m.ProtocolVersion, "3.1.1"),
			Alpn:            nonNil(&m.ALPN),
			AuthMethod:      nonEmpty(&m.AuthMethod),
			Topics: oapi.MqttTopics{
				Publish:      m.Topics.Publish,
				Subscribe:    m.Topics.Subscribe,
				TwinResponse: nonEmpty(&m.Topics.TwinRequest),
				TwinDesired:  nonEmpty(&m.Topics.TwinPatch),
				Methods:      nonEmpty(&m.Topics.Methods),
			},
			Tls: tls,
		}
	}
	if a := p.AMQP; a != nil {
		mech := oapi.PLAIN
		if a.Username == "" {
			mech = oapi.ANONYMOUS
		}
		out.Amqp = &parts.amqp
		*out.Amqp = oapi.AmqpProfile{
			Host:          a.Host,
			Port:          a.Port,
			Transport:     oapi.AmqpProfileTransport(a.Transport),
			Url:           a.URL,
			SaslMechanism: mech,
			Username:      nonEmpty(&a.Username),
			Password:      nonEmpty(&a.Password),
			Address:       a.Address,
			Subprotocol:   nonEmpty(&a.Subprotocol),
			Tls:           tls,
		}
		out.Amqp.Cbs.Node = "$cbs"
		out.Amqp.Cbs.TokenType = signer.CBSTokenType
		out.Amqp.Cbs.Audience = a.CBSAudience
	}
	if h := p.HTTPS; h != nil {
		out.Https = &parts.https
		*out.Https = oapi.HttpsProfile{Url: h.URL, Authorization: nonEmpty(&h.Authorization), Alpn: nonNil(&h.ALPN)}
		if h.Headers != nil {
			out.Https.Headers = &h.Headers
		}
	}
	out.Signature = nonEmpty(&is.Signature)
	return out
}

// nonNil is s, or nil for a nil slice: an optional field without a copy.
func nonNil(s *[]string) *[]string {
	if *s == nil {
		return nil
	}
	return s
}

// nonEmpty is s, or nil for an empty string: an optional field without a copy.
func nonEmpty(s *string) *string {
	if *s == "" {
		return nil
	}
	return s
}
