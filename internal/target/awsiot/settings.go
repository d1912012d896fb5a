package awsiot

import (
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
)

// AWS IoT Core's message broker limits that a topic must keep: at most 256 bytes and
// 7 slashes (8 levels).
const (
	maxTopicBytes  = 256
	maxTopicSlash  = 7
	maxIDLen       = 128
	deviceIDMarker = "{deviceId}"
)

// DefaultTopicTemplate is the telemetry topic of a hub that names none.
const DefaultTopicTemplate = "devices/{deviceId}/telemetry"

// Settings are an awsiot hub's own fields (domain.Hub.Settings), by their API names.
type Settings struct {
	// AuthorizerName is the AWS IoT custom authorizer's name.
	AuthorizerName string `json:"authorizerName,omitempty"`
	// TokenKeyName is the authorizer's token key name: the query parameter or header
	// the token travels in.
	TokenKeyName string `json:"tokenKeyName,omitempty"`
	// Signing says the authorizer requires the token's signature (default true).
	Signing *bool `json:"signing,omitempty"`
	// TopicTemplate is the telemetry topic; {deviceId} stands for the device ID.
	TopicTemplate string `json:"topicTemplate,omitempty"`
	// SubscribeTemplates are topic filters the device subscribes to.
	SubscribeTemplates []string `json:"subscribeTemplates,omitempty"`
	// CertificateSettings are the fields of mode certificate.
	target.CertificateSettings
}

// Reserved parameter names AWS IoT Core reads itself; a token key name must differ.
var reserved = []string{"x-amz-customauthorizer-name", "x-amz-customauthorizer-signature"}

// check applies the rules to s for a hub in mode, filling defaults; errors name the
// field.
func (s *Settings) check(mode domain.SigningMode) error {
	if err := s.CertificateSettings.Normalize(mode); err != nil {
		return err
	}
	if mode == domain.SignCertificate {
		if s.AuthorizerName != "" || s.TokenKeyName != "" || s.Signing != nil {
			return domain.Invalid("authorizerName, tokenKeyName and signing apply to mode customAuthorizer, not certificate")
		}
		return s.checkTopics()
	}
	if s.AuthorizerName == "" {
		return domain.Invalid("authorizerName: an awsiot hub needs the custom authorizer's name")
	}
	if !validName(s.AuthorizerName, "_=,@-") {
		return domain.Invalid("authorizerName: 1 to 128 letters, digits or _ = , @ - (AWS's rule for authorizer names)")
	}
	if s.TokenKeyName == "" {
		return domain.Invalid("tokenKeyName: an awsiot hub needs the authorizer's token key name")
	}
	if !validName(s.TokenKeyName, "_-") {
		return domain.Invalid("tokenKeyName: 1 to 128 letters, digits, _ or -")
	}
	for _, r := range reserved {
		if strings.EqualFold(s.TokenKeyName, r) {
			return domain.Invalid("tokenKeyName: %s is AWS's own parameter", r)
		}
	}
	if s.Signing == nil {
		on := true
		s.Signing = &on
	}
	return s.checkTopics()
}

// checkTopics checks the topic templates, filling the default.
func (s *Settings) checkTopics() error {
	if s.TopicTemplate == "" {
		s.TopicTemplate = DefaultTopicTemplate
	}
	if err := CheckTemplate(s.TopicTemplate, false); err != nil {
		return domain.Invalid("topicTemplate: %s", err.Error())
	}
	if len(s.SubscribeTemplates) > 16 {
		return domain.Invalid("subscribeTemplates: at most 16")
	}
	for _, f := range s.SubscribeTemplates {
		if err := CheckTemplate(f, true); err != nil {
			return domain.Invalid("subscribeTemplates: %q: %s", f, err.Error())
		}
	}
	return nil
}

type templateError string

func (e templateError) Error() string { return string(e) }

// CheckTemplate checks a topic template (a topic filter template when filter). Every
// template names the device, so a device's policy covers its own topics only.
// Characters AWS IoT policies read as wildcards or variables (* ? ${) are refused: the
// authorizer puts the topics into policy resources verbatim. The error says what is
// wrong, without the field's name.
func CheckTemplate(t string, filter bool) error {
	if !strings.Contains(t, deviceIDMarker) {
		return templateError("must contain {deviceId}, so each device has topics of its own")
	}
	rest := strings.ReplaceAll(t, deviceIDMarker, "")
	if strings.ContainsAny(rest, "{}") {
		return templateError("{deviceId} is the only placeholder")
	}
	if strings.ContainsAny(rest, "*?") || strings.Contains(rest, "${") || strings.ContainsRune(rest, 0) {
		return templateError("must not contain * ? ${ or NUL (AWS IoT policy wildcards and variables)")
	}
	if strings.Count(t, "/") > maxTopicSlash {
		return templateError("AWS IoT Core allows at most 7 slashes in a topic")
	}
	n := len(t) + strings.Count(t, deviceIDMarker)*(maxIDLen-len(deviceIDMarker))
	if n > maxTopicBytes {
		return templateError("with a 128-character device ID it exceeds AWS IoT Core's 256-byte topic limit")
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if !strings.ContainsAny(l, "+#") {
			continue
		}
		if !filter {
			return templateError("a publish topic holds no + or # wildcard")
		}
		if l != "+" && l != "#" {
			return templateError("a wildcard + or # must be a whole topic level")
		}
		if l == "#" && i != len(levels)-1 {
			return templateError("# must be the last topic level")
		}
	}
	return nil
}

// validName reports whether s is 1 to 128 ASCII letters, digits or extra characters.
func validName(s, extra string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// Topic expands template t for device id.
func Topic(t, id string) string { return strings.ReplaceAll(t, deviceIDMarker, id) }
