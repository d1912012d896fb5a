package signer

import "strings"

// IoT Hub protocol constants devices must get exactly right.
const (
	// IoTHubAPIVersion is the api-version the MQTT user name and HTTPS URLs carry.
	IoTHubAPIVersion = "2021-04-12"
	// DPSAPIVersion is the api-version DPS MQTT user names and HTTPS URLs carry.
	DPSAPIVersion = "2021-06-01"
	// WebSocketPath is where IoT Hub serves MQTT and AMQP over WebSocket.
	WebSocketPath = "/$iothub/websocket"
	// AMQPWebSocketSubprotocol is the WebSocket subprotocol for AMQP.
	AMQPWebSocketSubprotocol = "AMQPWSB10"
	// MQTTWebSocketSubprotocol is the WebSocket subprotocol for MQTT.
	MQTTWebSocketSubprotocol = "mqtt"
	// CBSTokenType is the token type of a CBS put-token for a SAS token.
	CBSTokenType = "servicebus.windows.net:sastoken"
)

// Transport is how a device reaches the broker.
type Transport string

// Transports.
const (
	TCP       Transport = "tcp"
	WebSocket Transport = "ws"
)

// Identity names what a token is for on an IoT Hub.
type Identity struct {
	// Host is the IoT Hub host name in the audience (classic or .device. endpoint).
	Host     string
	DeviceID string
	// ModuleID is empty for a device identity.
	ModuleID string
	// GatewayHostName is the IoT Edge gateway the device connects through, if any.
	GatewayHostName string
}

// connectHost is where the device opens its connection: the gateway when there is one.
func (id Identity) connectHost() string {
	if id.GatewayHostName != "" {
		return id.GatewayHostName
	}
	return id.Host
}

// Resource is the token resource for the identity.
func (id Identity) Resource() string {
	if id.ModuleID != "" {
		return IoTHubModuleResource(id.Host, id.DeviceID, id.ModuleID)
	}
	return IoTHubDeviceResource(id.Host, id.DeviceID)
}

// HubName is the short hub name AMQP SASL user names carry: the first label of the host.
func (id Identity) HubName() string {
	name, _, _ := strings.Cut(id.Host, ".")
	return name
}

// MQTT holds ready-to-use MQTT connection settings.
type MQTT struct {
	Host      string
	Port      int
	Transport Transport
	// URL is mqtts://host:port or wss://host:443/$iothub/websocket.
	URL      string
	ClientID string
	Username string
	Password string
	Topics   MQTTTopics
	// ProtocolVersion is "3.1.1" (when empty) or "5".
	ProtocolVersion string
	// ALPN lists the TLS ALPN protocols to offer; nil for none.
	ALPN []string
	// AuthMethod is the MQTT 5 enhanced authentication method whose data is the token;
	// "" when the credential is in the user name and password.
	AuthMethod string
}

// MQTTTopics are the topics an IoT Hub device or a DPS registration uses.
type MQTTTopics struct {
	Publish   string
	Subscribe []string
	// Extra topics: twin and direct methods (IoT Hub only).
	TwinRequest string
	TwinPatch   string
	Methods     string
}

// AMQP holds ready-to-use AMQP 1.0 connection settings.
type AMQP struct {
	Host      string
	Port      int
	Transport Transport
	// URL is the uamqp-style amqps://user:token@host/address, or wss://host:443/$iothub/websocket.
	URL string
	// Username and Password are the SASL PLAIN credentials; empty when the peer expects
	// SASL ANONYMOUS followed by a CBS put-token (Event Hubs).
	Username string
	Password string
	// Address is the telemetry link target.
	Address string
	// Subprotocol is set for WebSocket transport.
	Subprotocol string
	// CBSAudience is the audience of a CBS put-token that renews the token on an open link.
	CBSAudience string
}

// HTTPS holds the settings for sending over HTTPS.
type HTTPS struct {
	URL string
	// Authorization is the Authorization header's value; "" for none.
	Authorization string
	// Headers are further headers to send; nil for none.
	Headers map[string]string
	// ALPN lists the TLS ALPN protocols to offer; nil for none.
	ALPN []string
}

// Profiles is everything a device needs to connect with a token.
type Profiles struct {
	MQTT             *MQTT
	AMQP             *AMQP
	HTTPS            *HTTPS
	ConnectionString string
}

// IoTHubProfiles builds the MQTT, AMQP, HTTPS and SDK connection-string settings for an
// IoT Hub device or module identity and its token.
func IoTHubProfiles(id Identity, token string, t Transport) Profiles {
	host, dev, mod := id.connectHost(), id.DeviceID, id.ModuleID
	// The identity's path below the hub, as MQTT user names, AMQP link addresses and
	// SAS resources spell it: {dev} or {dev}/modules/{mod}.
	devPath := [3]string{dev, "", ""}
	if mod != "" {
		devPath[1], devPath[2] = "/modules/", mod
	}
	// Every string below in one buffer (strBuf); its size covers them all but for
	// escape-heavy IDs, where append grows it.
	tokenRoom := len(token) // the connection string's copy
	if t != WebSocket {
		tokenRoom += len(token) + len(token)/2 // the AMQP URL's escaped copy
	}
	sb := strBuf{b: make([]byte, 0, 8*len(host)+2*len(id.Host)+len(id.GatewayHostName)+tokenRoom+12*(len(dev)+len(mod))+320)}
	clientID := -1 // the device ID itself
	if mod != "" {
		clientID = sb.cat(dev, "/", mod)
	}
	username := sb.cat(id.Host, "/", dev, "/", mod)
	if mod == "" {
		sb.b = sb.b[:len(sb.b)-1] // {host}/{dev}, no empty module segment
	}
	sb.str("/?api-version=" + IoTHubAPIVersion)
	sb.spans[username][1] = len(sb.b)
	linkPath := sb.cat("/devices/", devPath[0], devPath[1], devPath[2], "/messages/events")
	publish := sb.cat("devices/", devPath[0], devPath[1], devPath[2], "/messages/events/")
	subscribe := -1
	if mod == "" {
		subscribe = sb.cat("devices/", dev, "/messages/devicebound/#")
	}
	amqpUser := sb.cat(devPath[0], devPath[1], devPath[2], "@sas.", id.HubName())
	resource := sb.cat(id.Host, "/devices/", devPath[0], devPath[1], devPath[2])
	// escapePath(linkPath): the IDs escaped, the slashes kept.
	sb.begin()
	sb.str("/devices/")
	sb.escapedPath(devPath[0])
	if mod != "" {
		sb.str("/modules/")
		sb.escapedPath(mod)
	}
	sb.str("/messages/events")
	linkURL := sb.end()
	var mqttURL, amqpURL int
	if t == WebSocket {
		mqttURL = sb.cat("wss://", host, ":443", WebSocketPath)
		amqpURL = mqttURL
	} else {
		mqttURL = sb.cat("mqtts://", host, ":8883")
		sb.begin()
		sb.str("amqps://")
		sb.escaped(dev)
		if mod != "" {
			sb.escaped("/modules/")
			sb.escaped(mod)
		}
		sb.escaped("@sas.")
		sb.escaped(id.HubName())
		sb.str(":")
		sb.escaped(token)
		sb.str("@")
		sb.str(host)
		sb.appendSpan(linkURL)
		amqpURL = sb.end()
	}
	httpsURL := sb.cat("https://", host)
	sb.appendSpan(linkURL)
	sb.str("?api-version=" + IoTHubAPIVersion)
	sb.spans[httpsURL][1] = len(sb.b)
	sb.begin()
	sb.str("HostName=")
	sb.str(id.Host)
	sb.str(";DeviceId=")
	sb.str(dev)
	if mod != "" {
		sb.str(";ModuleId=")
		sb.str(mod)
	}
	sb.str(";SharedAccessSignature=")
	sb.str(token)
	if id.GatewayHostName != "" {
		sb.str(";GatewayHostName=")
		sb.str(id.GatewayHostName)
	}
	cs := sb.end()
	strs := sb.strings()
	at := func(i int, or string) string {
		if i < 0 {
			return or
		}
		return strs[i]
	}

	// The three profiles in one allocation: they are built for every token.
	parts := new(struct {
		mqtt      MQTT
		amqp      AMQP
		https     HTTPS
		subscribe [1]string
	})
	mqtt, amqp, https := &parts.mqtt, &parts.amqp, &parts.https
	*mqtt = MQTT{
		Host:      host,
		Transport: t,
		URL:       strs[mqttURL],
		ClientID:  at(clientID, dev),
		// The user name always names the hub, also through an Edge gateway.
		Username: strs[username],
		Password: token,
		Topics: MQTTTopics{
			Publish:     strs[publish],
			TwinRequest: "$iothub/twin/res/#",
			TwinPatch:   "$iothub/twin/PATCH/properties/desired/#",
			Methods:     "$iothub/methods/POST/#",
		},
	}
	if mod == "" {
		parts.subscribe[0] = strs[subscribe]
		mqtt.Topics.Subscribe = parts.subscribe[:]
	} else {
		// Modules receive no cloud-to-device messages; they get twin and method traffic.
		mqtt.Topics.Subscribe = []string{}
	}
	*amqp = AMQP{
		Host:        host,
		Transport:   t,
		URL:         strs[amqpURL],
		Username:    strs[amqpUser],
		Password:    token,
		Address:     strs[linkPath],
		CBSAudience: strs[resource],
	}
	if t == WebSocket {
		mqtt.Port, amqp.Port = 443, 443
		amqp.Subprotocol = AMQPWebSocketSubprotocol
	} else {
		mqtt.Port, amqp.Port = 8883, 5671
	}
	*https = HTTPS{URL: strs[httpsURL], Authorization: token}
	return Profiles{MQTT: mqtt, AMQP: amqp, HTTPS: https, ConnectionString: strs[cs]}
}

// EventHubsProfiles builds AMQP and HTTPS settings for a publisher-scoped Event Hubs
// token. Event Hubs takes the token through CBS (SASL ANONYMOUS), not SASL PLAIN. There
// is no SDK connection string: SDKs send to the entity, which a publisher-scoped token
// does not cover.
func EventHubsProfiles(namespaceHost, entity, publisher, token string, t Transport) Profiles {
	address := "/" + entity + "/publishers/" + publisher
	amqp := &AMQP{
		Host:        namespaceHost,
		Transport:   t,
		Address:     address,
		CBSAudience: EventHubsPublisherResource(namespaceHost, entity, publisher),
	}
	if t == WebSocket {
		amqp.Port = 443
		amqp.URL = "wss://" + namespaceHost + ":443/$servicebus/websocket"
		amqp.Subprotocol = AMQPWebSocketSubprotocol
	} else {
		amqp.Port = 5671
		amqp.URL = "amqps://" + namespaceHost + escapePath(address)
	}
	return Profiles{
		AMQP: amqp,
		HTTPS: &HTTPS{
			URL:           "https://" + namespaceHost + escapePath(address) + "/messages",
			Authorization: token,
		},
	}
}

// DPSProfiles builds the MQTT and HTTPS settings to register with DPS.
func DPSProfiles(globalHost, idScope, registrationID, token string, t Transport) Profiles {
	mqtt := &MQTT{
		Host:      globalHost,
		Transport: t,
		ClientID:  registrationID,
		Username:  idScope + "/registrations/" + registrationID + "/api-version=" + DPSAPIVersion,
		Password:  token,
		Topics: MQTTTopics{
			Publish:   "$dps/registrations/PUT/iotdps-register/?$rid=1",
			Subscribe: []string{"$dps/registrations/res/#"},
		},
	}
	if t == WebSocket {
		mqtt.Port = 443
		mqtt.URL = "wss://" + globalHost + ":443/$iothub/websocket"
	} else {
		mqtt.Port = 8883
		mqtt.URL = "mqtts://" + globalHost + ":8883"
	}
	return Profiles{
		MQTT: mqtt,
		HTTPS: &HTTPS{
			URL:           "https://" + globalHost + "/" + idScope + "/registrations/" + Escape(registrationID) + "/register?api-version=" + DPSAPIVersion,
			Authorization: token,
		},
	}
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	b := make([]byte, 0, encodedLen(p)) // an upper bound: it counts each / as %2F
	for i, seg := range strings.Split(p, "/") {
		if i > 0 {
			b = append(b, '/')
		}
		b = appendEscaped(b, seg)
	}
	return string(b)
}
