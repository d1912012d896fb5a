package jwtbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Defaults of a jwtbroker hub's settings.
const (
	DefaultPort             = 8883
	DefaultMQTTVersion      = MQTT5
	DefaultAlgorithm        = "ES256"
	DefaultClientIDTemplate = Placeholder
	DefaultUsernameTemplate = Placeholder
	DefaultTopicTemplate    = "devices/" + Placeholder + "/telemetry"
)

// MQTT protocol versions, as the settings and the profile spell them.
const (
	MQTT311 = "3.1.1"
	MQTT5   = "5"
)

// EventGridSuffix ends the host name of every Azure Event Grid namespace; such a hub's
// tokens are signed with RS256, the only algorithm Event Grid's custom JWT
// authentication accepts.
const EventGridSuffix = ".eventgrid.azure.net"

// Placeholder stands for the device ID in every template and claim string.
const Placeholder = "{deviceId}"

// maxClaims bounds the claim templates (the API's maxProperties).
const maxClaims = 32

// registeredClaims are the claims the service sets itself; claim templates may not.
var registeredClaims = []string{"iss", "sub", "aud", "iat", "exp", "nbf", "jti"}

// Settings are a jwtbroker hub's own fields (json tags = API field names).
type Settings struct {
	Port               int      `json:"port,omitempty"`
	MQTTVersion        string   `json:"mqttVersion,omitempty"`
	Audience           string   `json:"audience,omitempty"`
	AuthMethod         string   `json:"authMethod,omitempty"`
	Algorithm          string   `json:"algorithm,omitempty"`
	ClientIDTemplate   string   `json:"clientIdTemplate,omitempty"`
	UsernameTemplate   string   `json:"usernameTemplate,omitempty"`
	TopicTemplate      string   `json:"topicTemplate,omitempty"`
	SubscribeTemplates []string `json:"subscribeTemplates,omitempty"`
	// Claims is a JSON object of claim templates, kept as its text so numbers and key
	// order survive as the operator wrote them.
	Claims json.RawMessage `json:"claims,omitempty"`
	// CertificateSettings are the fields of mode certificate.
	target.CertificateSettings
}

// normalize fills s's defaults for hub host and checks every field, naming it.
func (s *Settings) normalize(host string) error {
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.Port < 1 || s.Port > 65535 {
		return domain.Invalid("port: must be 1 to 65535, not %d", s.Port)
	}
	if s.MQTTVersion == "" {
		s.MQTTVersion = DefaultMQTTVersion
	}
	if s.MQTTVersion != MQTT311 && s.MQTTVersion != MQTT5 {
		return domain.Invalid("mqttVersion: must be %q or %q", MQTT311, MQTT5)
	}
	if s.Audience == "" {
		s.Audience = host
	}
	if len(s.Audience) > 512 || !printable(s.Audience) {
		return domain.Invalid("audience: must be 1 to 512 printable ASCII characters")
	}
	if s.AuthMethod != "" {
		if s.MQTTVersion != MQTT5 {
			return domain.Invalid("authMethod: MQTT 5 enhanced authentication needs mqttVersion 5, not %s", s.MQTTVersion)
		}
		if len(s.AuthMethod) > 64 || !methodName(s.AuthMethod) {
			return domain.Invalid("authMethod: must be 1 to 64 of A-Z a-z 0-9 . _ -")
		}
	}
	eventGrid := strings.HasSuffix(strings.ToLower(host), EventGridSuffix)
	if s.Algorithm == "" {
		s.Algorithm = DefaultAlgorithm
		if eventGrid {
			s.Algorithm = "RS256"
		}
	}
	if s.Algorithm != "ES256" && s.Algorithm != "RS256" {
		return domain.Invalid("algorithm: must be ES256 or RS256")
	}
	if eventGrid && s.Algorithm != "RS256" {
		return domain.Invalid("algorithm: Azure Event Grid namespaces accept RS256 tokens only, not %s", s.Algorithm)
	}
	if s.ClientIDTemplate == "" {
		s.ClientIDTemplate = DefaultClientIDTemplate
	}
	if err := checkTemplate("clientIdTemplate", s.ClientIDTemplate, 256); err != nil {
		return err
	}
	if !strings.Contains(s.ClientIDTemplate, Placeholder) {
		// One client ID for every device would have the broker drop each device's
		// session whenever another connects.
		return domain.Invalid("clientIdTemplate: must contain %s, so each device has its own client ID", Placeholder)
	}
	if s.UsernameTemplate == "" {
		s.UsernameTemplate = DefaultUsernameTemplate
	}
	if err := checkTemplate("usernameTemplate", s.UsernameTemplate, 256); err != nil {
		return err
	}
	if s.TopicTemplate == "" {
		s.TopicTemplate = DefaultTopicTemplate
	}
	if err := checkTemplate("topicTemplate", s.TopicTemplate, 512); err != nil {
		return err
	}
	if strings.ContainsAny(s.TopicTemplate, "+#") {
		return domain.Invalid("topicTemplate: a publish topic takes no wildcard (+ or #)")
	}
	if len(s.SubscribeTemplates) > 16 {
		return domain.Invalid("subscribeTemplates: at most 16, not %d", len(s.SubscribeTemplates))
	}
	for _, f := range s.SubscribeTemplates {
		if err := checkTemplate("subscribeTemplates", f, 512); err != nil {
			return err
		}
		if !validFilter(f) {
			return domain.Invalid("subscribeTemplates: %q is not an MQTT topic filter (# only as the last level, + and # alone in their level)", f)
		}
	}
	return s.normalizeClaims()
}

// normalizeClaims checks that Claims is a JSON object of at most maxClaims members
// none of which is a registered claim, and compacts it; "null" means none.
func (s *Settings) normalizeClaims() error {
	if len(s.Claims) == 0 || string(bytes.TrimSpace(s.Claims)) == "null" {
		s.Claims = nil
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(s.Claims, &m); err != nil || m == nil {
		return domain.Invalid("claims: must be a JSON object")
	}
	if len(m) > maxClaims {
		return domain.Invalid("claims: at most %d members, not %d", maxClaims, len(m))
	}
	for name := range m {
		// A template key that expands to a registered name is overwritten at minting.
		if slices.Contains(registeredClaims, name) {
			return domain.Invalid("claims: %q is a registered claim the service sets itself (%s)", name, strings.Join(registeredClaims, ", "))
		}
	}
	var all any
	if err := json.Unmarshal(s.Claims, &all); err != nil {
		// Valid JSON that JWT libraries cannot read back, e.g. a number beyond float64.
		return domain.Invalid("claims: %s", typeProblem(err))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, s.Claims); err != nil {
		return domain.Invalid("claims: must be a JSON object")
	}
	s.Claims = buf.Bytes()
	return nil
}

// decode reads h's settings as given, refusing what the kind does not take.
func decode(h domain.Hub) (Settings, error) {
	var s Settings
	if err := target.DecodeSettings(h, &s); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// expand replaces every Placeholder in t with id.
func expand(t, id string) string { return strings.ReplaceAll(t, Placeholder, id) }

// checkTemplate refuses a template that is too long, holds control characters, or has
// a placeholder other than {deviceId} (a typo such as {deviceID} would otherwise reach
// the broker verbatim).
func checkTemplate(field, t string, maxLen int) error {
	if t == "" || len(t) > maxLen {
		return domain.Invalid("%s: must be 1 to %d characters", field, maxLen)
	}
	if !printable(t) {
		return domain.Invalid("%s: must be printable ASCII", field)
	}
	rest := strings.ReplaceAll(t, Placeholder, "")
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		if j := strings.IndexByte(rest[i:], '}'); j > 0 {
			return domain.Invalid("%s: unknown placeholder %s; the only one is %s", field, rest[i:i+j+1], Placeholder)
		}
	}
	return nil
}

// validFilter reports whether f is an MQTT topic filter: # only as the whole last
// level, + only as a whole level.
func validFilter(f string) bool {
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return false
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

func methodName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// typeProblem says what is wrong with claims that are JSON but not readable as JWT
// claims, without echoing them.
func typeProblem(err error) string {
	if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return "holds a number out of range"
	}
	return "not a valid JSON object"
}
