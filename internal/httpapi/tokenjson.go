package httpapi

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// The token response is the one body every device fetches, so it is written by hand
// instead of through encoding/json's reflection: the same bytes (field order, omitempty,
// escaping without HTML escapes, RFC 3339 times, null for a nil slice, trailing newline),
// at a fraction of the cost. TestTokenJSONMatchesEncodingJSON holds the two equal over
// every field the generated types have.

var tokenBufs = sync.Pool{New: func() any { return new([]byte) }}

// appendTokenResponse appends t as encoding/json (SetEscapeHTML(false)) would.
func appendTokenResponse(b []byte, t *oapi.TokenResponse) []byte {
	b = append(b, '{')
	if t.Amqp != nil {
		b = append(b, `"amqp":`...)
		b = appendAMQP(b, t.Amqp)
		b = append(b, ',')
	}
	if t.ConnectionString != nil {
		b = appendField(b, "connectionString", *t.ConnectionString)
	}
	b = appendTimeField(b, "expiresAt", t.ExpiresAt)
	b = appendIntField(b, "expiresIn", t.ExpiresIn)
	if h := t.Https; h != nil {
		b = append(b, `"https":{`...)
		if h.Alpn != nil {
			b = appendStringsField(b, "alpn", *h.Alpn)
		}
		if h.Authorization != nil {
			b = appendField(b, "authorization", *h.Authorization)
		}
		if h.Headers != nil {
			b = appendKey(b, "headers")
			b = appendStringMap(b, *h.Headers)
			b = append(b, ',')
		}
		b = appendLastField(b, "url", h.Url)
		b = append(b, "},"...)
	}
	b = appendField(b, "hub", t.Hub)
	b = appendField(b, "kind", string(t.Kind))
	if t.Mqtt != nil {
		b = append(b, `"mqtt":`...)
		b = appendMQTT(b, t.Mqtt)
		b = append(b, ',')
	}
	b = appendTimeField(b, "refreshAfter", t.RefreshAfter)
	b = appendField(b, "resource", t.Resource)
	b = appendTimeField(b, "serverTime", t.ServerTime)
	if t.Signature != nil {
		b = appendField(b, "signature", *t.Signature)
	}
	b = appendLastField(b, "token", t.Token)
	return append(b, "}\n"...)
}

func appendMQTT(b []byte, m *oapi.MqttProfile) []byte {
	b = append(b, '{')
	if m.Alpn != nil {
		b = appendStringsField(b, "alpn", *m.Alpn)
	}
	if m.AuthMethod != nil {
		b = appendField(b, "authMethod", *m.AuthMethod)
	}
	b = appendField(b, "clientId", m.ClientId)
	b = appendField(b, "host", m.Host)
	b = appendField(b, "password", m.Password)
	b = appendIntField(b, "port", m.Port)
	b = appendField(b, "protocolVersion", m.ProtocolVersion)
	if m.Tls != nil {
		b = append(b, `"tls":`...)
		b = appendTLS(b, m.Tls)
		b = append(b, ',')
	}
	b = append(b, `"topics":{`...)
	if m.Topics.Methods != nil {
		b = appendField(b, "methods", *m.Topics.Methods)
	}
	b = appendField(b, "publish", m.Topics.Publish)
	b = append(b, `"subscribe":`...)
	b = appendStrings(b, m.Topics.Subscribe)
	if m.Topics.TwinDesired != nil {
		b = append(b, ',')
		b = appendKey(b, "twinDesired")
		b = appendString(b, *m.Topics.TwinDesired)
	}
	if m.Topics.TwinResponse != nil {
		b = append(b, ',')
		b = appendKey(b, "twinResponse")
		b = appendString(b, *m.Topics.TwinResponse)
	}
	b = append(b, "},"...)
	b = appendField(b, "transport", string(m.Transport))
	b = appendField(b, "url", m.Url)
	b = appendLastField(b, "username", m.Username)
	return append(b, '}')
}

func appendAMQP(b []byte, a *oapi.AmqpProfile) []byte {
	b = append(b, '{')
	b = appendField(b, "address", a.Address)
	b = append(b, `"cbs":{`...)
	b = appendField(b, "audience", a.Cbs.Audience)
	b = appendField(b, "node", a.Cbs.Node)
	b = appendLastField(b, "tokenType", a.Cbs.TokenType)
	b = append(b, "},"...)
	b = appendField(b, "host", a.Host)
	if a.Password != nil {
		b = appendField(b, "password", *a.Password)
	}
	b = appendIntField(b, "port", a.Port)
	b = appendField(b, "saslMechanism", string(a.SaslMechanism))
	if a.Subprotocol != nil {
		b = appendField(b, "subprotocol", *a.Subprotocol)
	}
	if a.Tls != nil {
		b = append(b, `"tls":`...)
		b = appendTLS(b, a.Tls)
		b = append(b, ',')
	}
	b = appendField(b, "transport", string(a.Transport))
	if a.Username != nil {
		b = appendField(b, "url", a.Url)
		b = appendLastField(b, "username", *a.Username)
	} else {
		b = appendLastField(b, "url", a.Url)
	}
	return append(b, '}')
}

func appendTLS(b []byte, t *oapi.TlsSettings) []byte {
	b = append(b, '{')
	if t.CaCert != nil {
		b = appendField(b, "caCert", *t.CaCert)
	}
	b = appendLastField(b, "serverName", t.ServerName)
	return append(b, '}')
}

// appendStrings appends ss as a JSON array, null when nil.
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func appendStringsField(b []byte, k string, ss []string) []byte {
	return append(appendStrings(appendKey(b, k), ss), ',')
}

// appendStringMap appends m as a JSON object with sorted keys, as encoding/json does.
func appendStringMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, k), ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

func appendKey(b []byte, k string) []byte {
	b = append(b, '"')
	b = append(b, k...)
	return append(b, `":`...)
}

// appendField appends "k":"v", — keys are constants that need no escaping.
func appendField(b []byte, k, v string) []byte {
	return append(appendLastField(b, k, v), ',')
}

func appendLastField(b []byte, k, v string) []byte {
	return appendString(appendKey(b, k), v)
}

func appendIntField(b []byte, k string, v int) []byte {
	b = strconv.AppendInt(appendKey(b, k), int64(v), 10)
	return append(b, ',')
}

// appendTimeField writes t as time.Time.MarshalJSON does (RFC 3339 with nanoseconds).
func appendTimeField(b []byte, k string, t time.Time) []byte {
	b = append(appendKey(b, k), '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, `",`...)
}

// appendString appends s as a JSON string. Printable ASCII other than " and \ is copied;
// anything else goes through encoding/json so escapes match it exactly.
func appendString(b []byte, s string) []byte {
	if !plain(s) {
		return appendStringSlow(b, s)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plain reports whether s is printable ASCII without " and \, eight bytes at a time: a
// token response is 2.5 KB of such strings, and a byte at a time was 6 % of a keep-alive
// request's CPU.
func plain(s string) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	// has reports whether some byte of x is below n (n <= 0x80): exact for "some".
	has := func(x, n uint64) bool { return (x-n*ones)&^x&highs != 0 }
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		if x&highs != 0 || has(x, 0x20) || has(x^('"'*ones), 1) || has(x^('\\'*ones), 1) {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func appendStringSlow(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}
