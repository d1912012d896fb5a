// Package awsauth is the AWS IoT Core custom authorizer for tokensvc's awsiot hubs: a
// plain function from AWS's authorizer event to its response, which cmd/awsauthorizer
// runs as a Lambda. It takes the device's token from where AWS IoT Core puts it (the
// event's token, the MQTT user name's query string, the MQTT password, HTTP headers or
// query string), verifies it as a JWT of tokensvc's issuer (RS256 or ES256, a known
// kid, iss, aud = the AWS IoT endpoint, exp with a small leeway; for MQTT sub = the
// client ID), and answers with a policy that lets that client ID connect and use that
// device's topics only. Anything else is isAuthenticated false — never a panic, and the
// token never reaches a log.
package awsauth

// Request is the event AWS IoT Core sends a custom authorizer's Lambda function. Fields
// a connection does not have are absent.
type Request struct {
	// Token is the value of the authorizer's token key, when the device sent it as a
	// query parameter of the MQTT user name, a header or a query parameter.
	Token string `json:"token,omitempty"`
	// SignatureVerified says AWS IoT Core checked the token's signature with the
	// authorizer's token-signing key (false when the authorizer has signing disabled).
	SignatureVerified bool `json:"signatureVerified"`
	// Protocols are e.g. ["tls", "mqtt"], ["tls", "http", "mqtt"] (WebSocket) or
	// ["tls", "http"] (HTTPS publish).
	Protocols    []string     `json:"protocols,omitempty"`
	ProtocolData ProtocolData `json:"protocolData"`
	// ConnectionMetadata.ID identifies the connection, for logs.
	ConnectionMetadata ConnectionMetadata `json:"connectionMetadata"`
}

// ProtocolData are the connection's details, one member per protocol used.
type ProtocolData struct {
	TLS  *TLSData  `json:"tls,omitempty"`
	HTTP *HTTPData `json:"http,omitempty"`
	MQTT *MQTTData `json:"mqtt,omitempty"`
}

// TLSData is the TLS connection's server name indication.
type TLSData struct {
	ServerName string `json:"serverName"`
}

// HTTPData are an HTTP request's (or WebSocket upgrade's) headers and query string
// ("?name=value&…").
type HTTPData struct {
	Headers     map[string]string `json:"headers,omitempty"`
	QueryString string            `json:"queryString,omitempty"`
}

// MQTTData is an MQTT CONNECT's user name, password (base64, as AWS IoT Core encodes
// it) and client ID (absent when the device sent none).
type MQTTData struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	ClientID string `json:"clientId,omitempty"`
}

// ConnectionMetadata identifies a connection.
type ConnectionMetadata struct {
	ID string `json:"id"`
}

// Response is a custom authorizer's answer.
type Response struct {
	IsAuthenticated bool `json:"isAuthenticated"`
	// PrincipalID names the connection in AWS's logs: 1 to 128 ASCII letters and digits.
	PrincipalID string `json:"principalId,omitempty"`
	// PolicyDocuments are AWS IoT policy documents, each a JSON string of at most 2,048
	// characters, at most 10.
	PolicyDocuments []string `json:"policyDocuments,omitempty"`
	// DisconnectAfterInSeconds bounds the connection's life (AWS: 300 to 86,400).
	DisconnectAfterInSeconds int `json:"disconnectAfterInSeconds,omitempty"`
	// RefreshAfterInSeconds is when AWS IoT Core calls the authorizer again for the
	// open connection (AWS: 300 to 86,400).
	RefreshAfterInSeconds int `json:"refreshAfterInSeconds,omitempty"`
}
