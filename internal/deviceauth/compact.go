package deviceauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// An assertion is read here rather than by jwt.Parser.ParseWithClaims, which decodes
// the header into a map[string]any and every segment onto the heap: a large share of a
// GET /token. golang-jwt still verifies every signature (jwt.SigningMethod.Verify, the
// method jwt.GetSigningMethod names). The reader takes the same steps in the same order
// with the same outcome and error class as that parser configured with acceptedAlgs,
// strict decoding and no claims validation (differential fuzz target
// FuzzAssertionLikeJWT). JSON it reads itself only in a plain form — printable ASCII
// strings without escapes, no member it reads named twice, no nesting but aud's array,
// numbers only in the dates; anything else goes through encoding/json exactly as
// golang-jwt's parser sends it there.

// acceptedAlgs are the JWS algorithms device credentials sign with
// (domain.CredentialType.Algorithm); any other alg is refused before a key is looked up.
var acceptedAlgs = []string{"HS256", "ES256", "EdDSA"}

// segmentEncoding is golang-jwt's with WithStrictDecoding: base64url without padding,
// unused bits zero, so a signature has one spelling. As in encoding/base64, CR and LF
// in a segment are skipped.
var segmentEncoding = base64.RawURLEncoding.Strict()

// assertionKey returns the key that must have signed an assertion whose header names
// method and, when crit is set, has a crit member; it runs after the claims are read,
// as a jwt.Keyfunc does.
type assertionKey func(method jwt.SigningMethod, crit bool) (any, error)

// checkAssertion reads the compact JWS s into c and verifies its signature with the key
// key returns. Errors wrap jwt.ErrTokenMalformed, jwt.ErrTokenUnverifiable or
// jwt.ErrTokenSignatureInvalid exactly when golang-jwt's parser returns that class.
func checkAssertion(s string, c *claims, key assertionKey) error {
	h, rest, ok := strings.Cut(s, ".")
	p, sigSeg, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sigSeg, ".") {
		return fmt.Errorf("%w: token contains an invalid number of segments", jwt.ErrTokenMalformed)
	}
	// Header and claims decode into one buffer; an assertion Verify accepts fits.
	var buf [MaxAssertionBytes * 3 / 4]byte
	header, err := decodeSegment(buf[:], h)
	if err != nil {
		return fmt.Errorf("%w: could not base64 decode header: %w", jwt.ErrTokenMalformed, err)
	}
	alg, hasAlg, crit, err := readHeader(header)
	if err != nil {
		return fmt.Errorf("%w: could not JSON decode header: %w", jwt.ErrTokenMalformed, err)
	}
	payload, err := decodeSegment(buf[min(len(header), len(buf)):], p)
	if err != nil {
		return fmt.Errorf("%w: could not base64 decode claim: %w", jwt.ErrTokenMalformed, err)
	}
	if err := readClaims(payload, c); err != nil {
		return fmt.Errorf("%w: could not JSON decode claim: %w", jwt.ErrTokenMalformed, err)
	}
	if !hasAlg {
		return fmt.Errorf("%w: signing method (alg) is unspecified", jwt.ErrTokenUnverifiable)
	}
	method := jwt.GetSigningMethod(alg)
	if method == nil {
		return fmt.Errorf("%w: signing method (alg) is unavailable", jwt.ErrTokenUnverifiable)
	}
	sig, err := segmentEncoding.DecodeString(sigSeg)
	if err != nil {
		return fmt.Errorf("%w: could not base64 decode signature: %w", jwt.ErrTokenMalformed, err)
	}
	if !slices.Contains(acceptedAlgs, method.Alg()) {
		return fmt.Errorf("%w: signing method %v is invalid", jwt.ErrTokenSignatureInvalid, method.Alg())
	}
	k, err := key(method, crit)
	if err != nil {
		return fmt.Errorf("%w: error while executing keyfunc: %w", jwt.ErrTokenUnverifiable, err)
	}
	// The signing input is the assertion up to its second dot, as the parser joins it.
	if err := method.Verify(s[:len(h)+1+len(p)], sig, k); err != nil {
		return fmt.Errorf("%w: %w", jwt.ErrTokenSignatureInvalid, err)
	}
	return nil
}

// decodeSegment decodes seg into dst when it fits, else into a new buffer.
func decodeSegment(dst []byte, seg string) ([]byte, error) {
	n := segmentEncoding.DecodedLen(len(seg))
	if n > len(dst) {
		dst = make([]byte, n)
	}
	m, err := segmentEncoding.Decode(dst[:n], []byte(seg))
	return dst[:m], err
}

// readHeader returns the header's alg (hasAlg: it is a string) and whether it has a
// crit member, as a map[string]any decoded by encoding/json says.
func readHeader(b []byte) (alg string, hasAlg, crit bool, err error) {
	if alg, hasAlg, crit, ok := readPlainHeader(b); ok {
		return alg, hasAlg, crit, nil
	}
	// A copy, so that b (on the caller's stack) does not escape.
	var h map[string]any
	if err := json.Unmarshal(bytes.Clone(b), &h); err != nil {
		return "", false, false, err
	}
	alg, hasAlg = h["alg"].(string)
	_, crit = h["crit"]
	return alg, hasAlg, crit, nil
}

// readPlainHeader reads a header object whose members are plain strings (plainString),
// true, false or null, with alg at most once; ok is false for anything else. Member
// names match exactly, as a map's keys do.
func readPlainHeader(b []byte) (alg string, hasAlg, crit, ok bool) {
	r := jsonReader[[]byte]{s: b}
	if !r.next('{') {
		return "", false, false, false
	}
	if !r.next('}') {
		seenAlg := false
		for {
			name, ok := r.plainString()
			if !ok || !r.next(':') {
				return "", false, false, false
			}
			v, isString := r.plainString()
			if !isString && !r.word("true") && !r.word("false") && !r.word("null") {
				return "", false, false, false
			}
			switch {
			case string(name) == "alg":
				if seenAlg {
					return "", false, false, false
				}
				seenAlg = true
				if isString {
					// Only a name golang-jwt knows is looked up later; others are refused
					// there, so a copy is made only of a short name.
					alg, hasAlg = headerAlg(v), true
				}
			case string(name) == "crit":
				crit = true
			}
			if r.next(',') {
				continue
			}
			if r.next('}') {
				break
			}
			return "", false, false, false
		}
	}
	return alg, hasAlg, crit, r.end()
}

// headerAlg returns v as a string without copying the names of acceptedAlgs.
func headerAlg(v []byte) string {
	for _, a := range acceptedAlgs {
		if string(v) == a {
			return a
		}
	}
	return string(v)
}

// readClaims decodes the claims JSON b into c as golang-jwt's parser does
// (json.Unmarshal into the jwt.Claims holding c).
func readClaims(b []byte, c *claims) error {
	if readPlainClaims(b, c) {
		return nil
	}
	// Copies, so that neither b nor c (on the caller's stack) escapes.
	fresh := new(claims)
	var jc jwt.Claims = fresh
	err := json.Unmarshal(bytes.Clone(b), &jc)
	*c = *fresh
	return err
}

// Claim names readPlainClaims knows; bit i of its set is claimNames[i].
var claimNames = [...]string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce"}

// readPlainClaims reads a claims object in the plain form — member names and string
// values printable ASCII without escapes, no claim named twice, aud a string, null or
// array of strings, dates numbers or null, other members plain strings, numbers, true,
// false or null — into c and reports whether it could (c is then to be overwritten).
// Member names match claimNames ASCII-case-insensitively, as encoding/json matches
// struct fields for ASCII names. The strings point into one copy of b; the dates and a
// one-string audience into c.backing.
func readPlainClaims(b []byte, c *claims) bool {
	r := jsonReader[string]{s: string(b)}
	*c = claims{}
	var seen uint
	if !r.next('{') {
		return false
	}
	if !r.next('}') {
		for {
			name, ok := r.plainString()
			if !ok || !r.next(':') {
				return false
			}
			i := slices.IndexFunc(claimNames[:], func(n string) bool { return strings.EqualFold(n, name) })
			if i >= 0 {
				if seen&(1<<i) != 0 {
					return false
				}
				seen |= 1 << i
			}
			if !r.plainClaim(i, c) {
				return false
			}
			if r.next(',') {
				continue
			}
			if r.next('}') {
				break
			}
			return false
		}
	}
	return r.end()
}

// plainClaim reads the value of claimNames[i] (i < 0: another member) into out.
func (r *jsonReader[T]) plainClaim(i int, out *claims) bool {
	if r.word("null") {
		return true // null leaves a claim absent (each is named once here)
	}
	var str *string
	switch {
	case i < 0:
		_, ok := r.plainString()
		return ok || r.word("true") || r.word("false") || len(r.number()) > 0
	case claimNames[i] == "aud":
		return r.plainAudience(out)
	case claimNames[i] == "exp":
		return r.plainDate(&out.ExpiresAt, &out.backing.dates[0])
	case claimNames[i] == "nbf":
		return r.plainDate(&out.NotBefore, &out.backing.dates[1])
	case claimNames[i] == "iat":
		return r.plainDate(&out.IssuedAt, &out.backing.dates[2])
	case claimNames[i] == "iss":
		str = &out.Issuer
	case claimNames[i] == "sub":
		str = &out.Subject
	case claimNames[i] == "jti":
		str = &out.ID
	default: // nonce
		str = &out.Nonce
	}
	v, ok := r.plainString()
	*str = string(v)
	return ok
}

// plainDate reads a number into *store as jwt.NumericDate does and points *d at it;
// one it cannot convert is left to encoding/json, which fails on it.
func (r *jsonReader[T]) plainDate(d **jwt.NumericDate, store *jwt.NumericDate) bool {
	n := json.Number(r.number())
	if n == "" {
		return false
	}
	nd, err := numericDateOf(n)
	if err != nil {
		return false
	}
	*store = nd
	*d = store
	return true
}

// plainAudience reads a plain string or an array of them, as jwt.ClaimStrings does.
func (r *jsonReader[T]) plainAudience(out *claims) bool {
	if v, ok := r.plainString(); ok {
		out.backing.aud[0] = string(v)
		out.Audience = out.backing.aud[:]
		return true
	}
	if !r.next('[') {
		return false
	}
	if r.next(']') {
		return true // an empty array is no audience
	}
	for {
		v, ok := r.plainString()
		if !ok {
			return false
		}
		out.Audience = append(out.Audience, string(v))
		if r.next(',') {
			continue
		}
		return r.next(']')
	}
}
