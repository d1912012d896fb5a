package audit

import (
	"encoding/json"
	"strconv"
	"time"
)

// appendRecord appends r as encoding/json marshals it, byte for byte, for the records
// the token path writes: every string plain (plainJSON) and every time one that
// time.Time.MarshalJSON accepts. For anything else ok is false and the caller marshals
// r with encoding/json (FuzzAppendRecord holds the two to the same bytes).
func appendRecord(b []byte, r *Record) (_ []byte, ok bool) {
	b = append(b, `{"time":`...)
	if b, ok = appendTime(b, r.Time); !ok {
		return b, false
	}
	fields := [...]struct {
		key, val  string
		omitEmpty bool
	}{
		{`,"event":`, r.Event, false},
		{`,"actor":`, r.Actor, false},
		{`,"role":`, r.Role, true},
		{`,"device":`, r.Device, true},
		{`,"gateway":`, r.Gateway, true},
		{`,"module":`, r.Module, true},
		{`,"hub":`, r.Hub, true},
	}
	for _, f := range fields {
		if b, ok = appendField(b, f.key, f.val, f.omitEmpty); !ok {
			return b, false
		}
	}
	if r.ExpiresAt != nil {
		b = append(b, `,"expiresAt":`...)
		if b, ok = appendTime(b, *r.ExpiresAt); !ok {
			return b, false
		}
	}
	if b, ok = appendField(b, `,"serial":`, r.Serial, true); !ok {
		return b, false
	}
	if b, ok = appendField(b, `,"outcome":`, r.Outcome, false); !ok {
		return b, false
	}
	if r.Status != 0 {
		b = strconv.AppendInt(append(b, `,"status":`...), int64(r.Status), 10)
	}
	if b, ok = appendField(b, `,"requestId":`, r.RequestID, true); !ok {
		return b, false
	}
	return append(b, '}'), true
}

// appendField appends key and s as a JSON string, nothing when s is empty and
// omitEmpty is set; ok is false when s is not plain.
func appendField(b []byte, key, s string, omitEmpty bool) ([]byte, bool) {
	if s == "" && omitEmpty {
		return b, true
	}
	if !plainJSON(s) {
		return b, false
	}
	b = append(b, key...)
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// plainJSON reports whether encoding/json writes s as it is between quotes: printable
// ASCII without the characters it escapes (quote, backslash, and <, > and & as HTML
// escaping does).
func plainJSON(s string) bool {
	for i := range len(s) {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendTime appends t quoted as time.Time.MarshalJSON writes it; ok is false for a
// time it refuses (a year outside [0,9999], a zone offset of 24 hours or more).
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	switch {
	case len(b) < n0+len("9999-") || b[n0+len("9999")] != '-':
		return b, false
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		if '0' <= c && c <= '9' || 10*(b[len(b)-5]-'0')+(b[len(b)-4]-'0') >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

// marshalRecord is r as encoding/json writes it, the fallback of appendRecord.
func marshalRecord(b []byte, r Record) ([]byte, error) {
	j, err := json.Marshal(r)
	return append(b, j...), err
}
