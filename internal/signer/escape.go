package signer

// Escape percent-encodes s the way SAS tokens and the URLs built around them need:
// every byte except A-Z a-z 0-9 - _ . ~ becomes %XX (upper-case hex). For the characters
// a device ID may hold it equals url.QueryEscape.
func Escape(s string) string {
	n := encodedLen(s)
	if n == len(s) {
		return s
	}
	return string(appendEscaped(make([]byte, 0, n), s))
}

// unreservedBytes marks the bytes Escape leaves as they are; a table because every
// token, and every URL holding one, is escaped on each GET /token.
var unreservedBytes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~'
	}
	return t
}()

func encodedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if !unreservedBytes[s[i]] {
			n += 2
		}
	}
	return n
}

const upperHex = "0123456789ABCDEF"

func appendEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreservedBytes[c] {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
	}
	return dst
}

// unescape reverses percent-encoding; '+' stays '+' because Escape never emits it for a
// space. It reports false for a malformed escape.
func unescape(s string) (string, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			n++
		}
	}
	if n == 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := fromHex(s[i+1])
		lo, ok2 := fromHex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
