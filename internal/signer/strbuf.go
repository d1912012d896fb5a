package signer

import (
	"strings"
	"unsafe"
)

// strBuf builds the many short strings of a token's profiles in one allocation: each
// string is appended to one buffer and remembered by its span; strings slices them all
// out of the finished buffer. Every GET /token builds a dozen of them, each its own
// allocation when concatenated with +.
type strBuf struct {
	b     []byte
	spans [maxStrs][2]int
	n     int
}

// maxStrs bounds the strings one strBuf holds (IoTHubProfiles needs 12).
const maxStrs = 16

// begin starts the next string; end finishes it and returns its index.
func (s *strBuf) begin() { s.spans[s.n][0] = len(s.b) }
func (s *strBuf) end() int {
	s.spans[s.n][1] = len(s.b)
	s.n++
	return s.n - 1
}

// cat appends parts as one string and returns its index.
func (s *strBuf) cat(parts ...string) int {
	s.begin()
	for _, p := range parts {
		s.b = append(s.b, p...)
	}
	return s.end()
}

// escaped appends Escape(p) (no new string: the bytes go into the buffer).
func (s *strBuf) escaped(p string) { s.b = appendEscaped(s.b, p) }

// escapedPath appends escapePath(p): every byte escaped as Escape does but '/'.
func (s *strBuf) escapedPath(p string) {
	for {
		seg, rest, found := strings.Cut(p, "/")
		s.b = appendEscaped(s.b, seg)
		if !found {
			return
		}
		s.b = append(s.b, '/')
		p = rest
	}
}

// appendSpan appends a copy of string i (finished) to the string begun last.
func (s *strBuf) appendSpan(i int) { s.b = append(s.b, s.b[s.spans[i][0]:s.spans[i][1]]...) }

// str appends p to the string begun last.
func (s *strBuf) str(p string) { s.b = append(s.b, p...) }

// strings returns the strings by index. The buffer is never written again, so the
// strings may share it (as strings.Builder's String does).
func (s *strBuf) strings() [maxStrs]string {
	var out [maxStrs]string
	if len(s.b) == 0 {
		return out
	}
	all := unsafe.String(&s.b[0], len(s.b))
	for i := range s.n {
		out[i] = all[s.spans[i][0]:s.spans[i][1]]
	}
	s.b = nil
	return out
}
