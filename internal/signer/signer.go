// Package signer mints and checks Azure shared access signature (SAS) tokens and builds
// the connection profiles devices use with them. It is pure: no I/O, and the only notion
// of time is the clock injected into a Signer.
package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Errors returned by Parse, Verify and DecodeKey.
var (
	// ErrMalformed means a token is not a well-formed SharedAccessSignature.
	ErrMalformed = errors.New("malformed SAS token")
	// ErrBadSignature means the signature does not match the key.
	ErrBadSignature = errors.New("SAS signature mismatch")
	// ErrExpired means the token's se is in the past.
	ErrExpired = errors.New("SAS token expired")
	// ErrBadKey means a key could not be decoded.
	ErrBadKey = errors.New("invalid key")
)

const prefix = "SharedAccessSignature "

// Signer mints SAS tokens against an injected clock.
type Signer struct {
	now func() time.Time
}

// New returns a Signer reading time from now; nil means time.Now.
func New(now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	return &Signer{now: now}
}

// Request describes one token to mint.
type Request struct {
	// Resource is the unencoded resource URI (see the Resource functions).
	Resource string
	// Key is the raw HMAC key (see DecodeKey).
	Key []byte
	// PolicyName is the skn field; empty omits it.
	PolicyName string
	// TTL is the lifetime from now; the expiry is truncated to whole seconds.
	TTL time.Duration
}

// Token is a minted SAS token.
type Token struct {
	Value    string
	Resource string
	// IssuedAt is the clock reading the expiry was computed from.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Now reads the signer's clock.
func (s *Signer) Now() time.Time { return s.now() }

// Sign mints the token described by r.
func (s *Signer) Sign(r Request) Token {
	now := s.now()
	se := now.Add(r.TTL).Unix()
	return Token{
		Value:     SignAt(r.Resource, r.Key, se, r.PolicyName),
		Resource:  r.Resource,
		IssuedAt:  now,
		ExpiresAt: time.Unix(se, 0).UTC(),
	}
}

// SignAt returns the token for resource signed with key, expiring at the Unix time se,
// with skn=policy when policy is not empty. It is the reference algorithm: the string to
// sign is enc(resource) + "\n" + se, and sr carries exactly that encoded resource.
func SignAt(resource string, key []byte, se int64, policy string) string {
	// One buffer holds the whole token; the string to sign is a slice of it, so the
	// signed sr and the emitted sr cannot differ.
	var seBuf [20]byte
	seStr := strconv.AppendInt(seBuf[:0], se, 10)
	n := len(prefix) + len("sr=") + encodedLen(resource) + len("&sig=") + 3*44 + len("&se=") + len(seStr)
	if policy != "" {
		n += len("&skn=") + encodedLen(policy)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, prefix...)
	buf = append(buf, "sr="...)
	start := len(buf)
	buf = appendEscaped(buf, resource)
	end := len(buf)

	sum := hmacSHA256(key, buf[start:end], seStr)
	var sig [44]byte
	base64.StdEncoding.Encode(sig[:], sum[:])

	buf = append(buf, "&sig="...)
	buf = appendEscaped(buf, string(sig[:]))
	buf = append(buf, "&se="...)
	buf = append(buf, seStr...)
	if policy != "" {
		buf = append(buf, "&skn="...)
		buf = appendEscaped(buf, policy)
	}
	// buf is never written again, so the string may share its memory, as
	// strings.Builder does; this saves a copy of every token.
	return unsafe.String(unsafe.SliceData(buf), len(buf))
}

// hmacSHA256 returns HMAC-SHA256(key, msg + "\n" + se). It is RFC 2104 written out with
// one hash state so the hot path allocates once instead of the six times crypto/hmac
// does; Verify uses crypto/hmac, so every test that verifies a minted token checks this.
func hmacSHA256(key, msg, se []byte) [sha256.Size]byte {
	var k [sha256.BlockSize]byte
	if len(key) > sha256.BlockSize {
		sum := sha256.Sum256(key)
		copy(k[:], sum[:])
	} else {
		copy(k[:], key)
	}
	var pad [sha256.BlockSize]byte
	for i := range k {
		pad[i] = k[i] ^ 0x36
	}
	h := sha256.New()
	h.Write(pad[:])
	h.Write(msg)
	h.Write([]byte{'\n'})
	h.Write(se)
	var inner, out [sha256.Size]byte
	h.Sum(inner[:0])
	for i := range k {
		pad[i] = k[i] ^ 0x5c
	}
	h.Reset()
	h.Write(pad[:])
	h.Write(inner[:])
	h.Sum(out[:0])
	return out
}

// MACFunc computes HMAC-SHA256 of msg with a key held elsewhere (e.g. Vault Transit).
type MACFunc func(msg []byte) ([]byte, error)

// SignWith mints the token described by r (r.Key unused) with a signature from mac.
func (s *Signer) SignWith(r Request, mac MACFunc) (Token, error) {
	now := s.now()
	se := now.Add(r.TTL).Unix()
	sum, err := mac(StringToSign(r.Resource, se))
	if err != nil {
		return Token{}, err
	}
	return Token{
		Value:     Assemble(r.Resource, base64.StdEncoding.EncodeToString(sum), se, r.PolicyName),
		Resource:  r.Resource,
		IssuedAt:  now,
		ExpiresAt: time.Unix(se, 0).UTC(),
	}, nil
}

// StringToSign returns what a SAS signature covers, for signing outside this package
// (e.g. an HMAC computed inside Vault Transit). Assemble turns the signature into a token.
func StringToSign(resource string, se int64) []byte {
	b := appendEscaped(nil, resource)
	b = append(b, '\n')
	return strconv.AppendInt(b, se, 10)
}

// Assemble builds a token from a base64 signature computed over StringToSign(resource, se).
func Assemble(resource, sigBase64 string, se int64, policy string) string {
	b := append([]byte(prefix), "sr="...)
	b = appendEscaped(b, resource)
	b = append(b, "&sig="...)
	b = appendEscaped(b, sigBase64)
	b = append(b, "&se="...)
	b = strconv.AppendInt(b, se, 10)
	if policy != "" {
		b = append(b, "&skn="...)
		b = appendEscaped(b, policy)
	}
	return string(b)
}

// Parsed is a decoded SAS token.
type Parsed struct {
	// Resource is the decoded sr.
	Resource string
	// Signature is the decoded base64 signature.
	Signature string
	Expiry    int64
	// PolicyName is the decoded skn, empty if absent.
	PolicyName string
	// encodedResource is sr exactly as sent: the signature covers these bytes.
	encodedResource string
}

// Parse decodes a SharedAccessSignature token without checking its signature.
func Parse(token string) (Parsed, error) {
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok {
		return Parsed{}, ErrMalformed
	}
	var p Parsed
	var haveSR, haveSig, haveSE, haveSKN bool
	for field := range strings.SplitSeq(rest, "&") {
		name, raw, ok := strings.Cut(field, "=")
		if !ok {
			return Parsed{}, ErrMalformed
		}
		val, ok := unescape(raw)
		if !ok {
			return Parsed{}, ErrMalformed
		}
		switch name {
		case "sr":
			if haveSR {
				return Parsed{}, ErrMalformed
			}
			haveSR, p.Resource, p.encodedResource = true, val, raw
		case "sig":
			if haveSig {
				return Parsed{}, ErrMalformed
			}
			haveSig, p.Signature = true, val
		case "se":
			if haveSE {
				return Parsed{}, ErrMalformed
			}
			se, err := strconv.ParseInt(val, 10, 64)
			// Only the canonical spelling: the signature covers these exact digits.
			if err != nil || se < 0 || strconv.FormatInt(se, 10) != raw {
				return Parsed{}, ErrMalformed
			}
			haveSE, p.Expiry = true, se
		case "skn":
			if haveSKN {
				return Parsed{}, ErrMalformed
			}
			haveSKN, p.PolicyName = true, val
		default:
			return Parsed{}, ErrMalformed
		}
	}
	if !haveSR || !haveSig || !haveSE || p.Resource == "" {
		return Parsed{}, ErrMalformed
	}
	return p, nil
}

// Verify parses token, checks its signature against key, and that it has not expired at
// now. It checks the token the way IoT Hub does, so tests and brokers can use it.
func Verify(token string, key []byte, now time.Time) (Parsed, error) {
	p, err := Parse(token)
	if err != nil {
		return Parsed{}, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(p.encodedResource))
	mac.Write([]byte{'\n'})
	mac.Write(strconv.AppendInt(nil, p.Expiry, 10))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(p.Signature)) {
		return Parsed{}, ErrBadSignature
	}
	if now.Unix() >= p.Expiry {
		return Parsed{}, ErrExpired
	}
	return p, nil
}

// KeyEncoding says how a key string becomes HMAC key bytes.
type KeyEncoding int

// Key encodings.
const (
	// KeyBase64 is used by IoT Hub and DPS: the key string is base64 of the key bytes.
	KeyBase64 KeyEncoding = iota
	// KeyUTF8 is used by Event Hubs and Service Bus: the key string itself is the key.
	KeyUTF8
)

// DecodeKey turns a key as Azure shows it into HMAC key bytes.
func DecodeKey(key string, enc KeyEncoding) ([]byte, error) {
	if key == "" {
		return nil, ErrBadKey
	}
	if enc == KeyUTF8 {
		return []byte(key), nil
	}
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(b) == 0 {
		return nil, ErrBadKey
	}
	return b, nil
}

// DeriveDeviceKey returns the DPS group-enrollment device key for registrationID:
// base64(HMAC-SHA256(base64decode(groupKey), registrationID)).
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	k, err := DecodeKey(groupKey, KeyBase64)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(registrationID))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// IoTHubDeviceResource is the resource of a device token.
func IoTHubDeviceResource(host, deviceID string) string {
	return host + "/devices/" + deviceID
}

// IoTHubModuleResource is the resource of a module token.
func IoTHubModuleResource(host, deviceID, moduleID string) string {
	return host + "/devices/" + deviceID + "/modules/" + moduleID
}

// EventHubsPublisherResource is the resource of a publisher-scoped Event Hubs token.
func EventHubsPublisherResource(namespaceHost, entity, publisher string) string {
	return "https://" + namespaceHost + "/" + entity + "/publishers/" + publisher
}

// DPSRegistrationResource is the resource of a DPS registration token.
func DPSRegistrationResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// DPSPolicyName is the skn DPS expects on registration tokens.
const DPSPolicyName = "registration"
