package httpapi

import (
	"bytes"
	"errors"
	"io"
)

// PrefersText is exported for the content-negotiation table test.
var PrefersText = prefersText

// ImportLine is one parsed import line, for the parser fuzz target.
type ImportLine struct {
	Line     int
	DeviceID string
	Hub      string
	Err      error
}

// ParseImport runs the import parser for contentType over body to its end.
func ParseImport(contentType string, body []byte) ([]ImportLine, error) {
	src, err := newImportSource(contentType, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var out []ImportLine
	for {
		l, err := src.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, ImportLine{Line: l.line, DeviceID: l.device.DeviceId, Hub: l.device.Hub, Err: l.err})
	}
}
