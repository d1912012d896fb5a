package tmpl

import (
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// View is what a template sees: the token and its settings under names that stay the
// same whatever the service's API code generator calls them. A value the response does
// not carry is "" (or nil, for a profile).
type View struct {
	// Token is the SAS token ("SharedAccessSignature sr=…").
	Token string `json:"token"`
	// ConnectionString is the SDK connection string, "" when the hub kind has none.
	ConnectionString string `json:"connectionString"`
	// Hub is the hub's host name, Kind its kind (iothub, eventhubs, dps, …), Resource the
	// sr the token is scoped to.
	Hub      string `json:"hub"`
	Kind     string `json:"kind"`
	Resource string `json:"resource"`
	// ExpiresAt, RefreshAfter and ServerTime are the service's times; ExpiresIn is the
	// lifetime in seconds.
	ExpiresAt    time.Time `json:"expiresAt"`
	RefreshAfter time.Time `json:"refreshAfter"`
	ServerTime   time.Time `json:"serverTime"`
	ExpiresIn    int       `json:"expiresIn"`
	// MQTT, AMQP and HTTPS are the connection profiles, nil when the token has none.
	MQTT  *MQTT  `json:"mqtt,omitempty"`
	AMQP  *AMQP  `json:"amqp,omitempty"`
	HTTPS *HTTPS `json:"https,omitempty"`
	// Certificate is set when the credential is a device certificate (hub mode
	// certificate), nil for a token.
	Certificate *Certificate `json:"certificate,omitempty"`

	// Mqtt, Amqp and Https are the profiles as the generated API client decodes them,
	// for templates written before View (`{{ .Mqtt.ClientId }}`, `{{ deref
	// .Amqp.Username }}`). Deprecated: their field names follow the code generator;
	// use MQTT, AMQP and HTTPS.
	Mqtt  *oapi.MqttProfile  `json:"-"`
	Amqp  *oapi.AmqpProfile  `json:"-"`
	Https *oapi.HttpsProfile `json:"-"`
}

// MQTT is the MQTT 3.1.1 profile.
type MQTT struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	// URL is mqtts://host:8883 or wss://host:443/$iothub/websocket; Transport is tcp or ws.
	URL             string `json:"url"`
	Transport       string `json:"transport"`
	ProtocolVersion string `json:"protocolVersion"`
	ClientID        string `json:"clientId"`
	Username        string `json:"username"`
	// Password is the token.
	Password string `json:"password"`
	// PublishTopic is where telemetry goes; SubscribeTopics are the cloud-to-device
	// filters.
	PublishTopic    string   `json:"publishTopic"`
	SubscribeTopics []string `json:"subscribeTopics"`
	// TLSServerName is the name the broker's certificate must carry; CACert a PEM
	// bundle to trust in addition (an IoT Edge root CA), "" when none.
	TLSServerName string `json:"tlsServerName"`
	CACert        string `json:"caCert"`
}

// AMQP is the AMQP 1.0 profile.
type AMQP struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	// URL is amqps://host:5671 or wss://host:443/$iothub/websocket; Transport is tcp or
	// ws, Subprotocol the WebSocket subprotocol ("" for tcp).
	URL         string `json:"url"`
	Transport   string `json:"transport"`
	Subprotocol string `json:"subprotocol"`
	// Address is the telemetry link's target.
	Address string `json:"address"`
	// SASLMechanism is PLAIN or ANONYMOUS; Username and Password are the SASL PLAIN
	// credentials, "" when the profile has none.
	SASLMechanism string `json:"saslMechanism"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	// CBSNode, CBSAudience and CBSTokenType are the put-token parameters.
	CBSNode       string `json:"cbsNode"`
	CBSAudience   string `json:"cbsAudience"`
	CBSTokenType  string `json:"cbsTokenType"`
	TLSServerName string `json:"tlsServerName"`
	CACert        string `json:"caCert"`
}

// HTTPS is the profile for IoT Hub's and Event Hubs' REST APIs.
type HTTPS struct {
	URL string `json:"url"`
	// Authorization is the Authorization header value (the token).
	Authorization string `json:"authorization"`
}

// NewView builds the View of r.
func NewView(r oapi.TokenResponse) View {
	v := View{
		Token: r.Token, ConnectionString: str(r.ConnectionString), Hub: r.Hub, Kind: string(r.Kind),
		Resource: r.Resource, ExpiresAt: r.ExpiresAt, RefreshAfter: r.RefreshAfter, ServerTime: r.ServerTime,
		ExpiresIn: r.ExpiresIn, Mqtt: r.Mqtt, Amqp: r.Amqp, Https: r.Https,
	}
	if p := r.Mqtt; p != nil {
		name, ca := tlsOf(p.Tls)
		v.MQTT = &MQTT{
			Host: p.Host, Port: p.Port, URL: p.Url, Transport: string(p.Transport), ProtocolVersion: p.ProtocolVersion,
			ClientID: p.ClientId, Username: p.Username, Password: p.Password,
			PublishTopic: p.Topics.Publish, SubscribeTopics: p.Topics.Subscribe, TLSServerName: name, CACert: ca,
		}
	}
	if p := r.Amqp; p != nil {
		name, ca := tlsOf(p.Tls)
		v.AMQP = &AMQP{
			Host: p.Host, Port: p.Port, URL: p.Url, Transport: string(p.Transport), Subprotocol: str(p.Subprotocol),
			Address: p.Address, SASLMechanism: string(p.SaslMechanism), Username: str(p.Username), Password: str(p.Password),
			CBSNode: p.Cbs.Node, CBSAudience: p.Cbs.Audience, CBSTokenType: p.Cbs.TokenType, TLSServerName: name, CACert: ca,
		}
	}
	if p := r.Https; p != nil {
		v.HTTPS = &HTTPS{URL: p.Url, Authorization: str(p.Authorization)}
	}
	return v
}

func tlsOf(t *oapi.TlsSettings) (serverName, caCert string) {
	if t == nil {
		return "", ""
	}
	return t.ServerName, str(t.CaCert)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
