package queue

import (
	"encoding/binary"
	"errors"
	"sort"

	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// errCorrupt marks a stored record that does not decode.
var errCorrupt = errors.New("queue: corrupt record")

const version = 1

// encode is a record's stored form: version, leaf, properties (sorted), body — each
// string preceded by its length as a uvarint.
func encode(leaf string, m telemetry.Message) []byte {
	n := 1 + binary.MaxVarintLen64*(2+2*len(m.Properties)) + len(leaf) + len(m.Body)
	keys := make([]string, 0, len(m.Properties))
	for k, v := range m.Properties {
		keys = append(keys, k)
		n += len(k) + len(v)
	}
	sort.Strings(keys)
	b := make([]byte, 0, n)
	b = append(b, version)
	b = appendString(b, leaf)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, m.Properties[k])
	}
	return append(b, m.Body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decode reads a record written by encode.
func decode(b []byte) (leaf string, m telemetry.Message, err error) {
	if len(b) == 0 || b[0] != version {
		return "", m, errCorrupt
	}
	b = b[1:]
	if leaf, b, err = readString(b); err != nil {
		return "", m, err
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)) {
		return "", m, errCorrupt
	}
	b = b[w:]
	if n > 0 {
		m.Properties = make(map[string]string, n)
	}
	for range n {
		var k, v string
		if k, b, err = readString(b); err != nil {
			return "", m, err
		}
		if v, b, err = readString(b); err != nil {
			return "", m, err
		}
		m.Properties[k] = v
	}
	m.Body = append([]byte{}, b...)
	return leaf, m, nil
}

func readString(b []byte) (string, []byte, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, errCorrupt
	}
	return string(b[w : w+int(n)]), b[w+int(n):], nil
}
