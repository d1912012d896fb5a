// Package devicefile reads bulk-import files of devices: NDJSON (one POST /devices body
// a line) and CSV (with the IoT Hub registry's column names as aliases). Each line is
// held to the same rules as a single create — one strict JSON value, valid against the
// spec's DeviceCreate schema — and a bad line is reported, not fatal. The registry's
// ImportDevice applies the provisioning rules to what it yields.
package devicefile

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// MaxLineBytes bounds one NDJSON line or CSV record.
const MaxLineBytes = 64 << 10

// Errors NewReader returns (wrapped in a domain.PublicError).
var (
	// ErrUnsupportedMedia means the content type is not one this package reads.
	ErrUnsupportedMedia = errors.New("unsupported media type")
	// ErrBadFile means the file cannot be read at all (e.g. a CSV header that does not parse).
	ErrBadFile = errors.New("bad request")
)

// ErrLineTooLong ends or rejects a line longer than MaxLineBytes.
var ErrLineTooLong = fmt.Errorf("line longer than %d bytes", MaxLineBytes)

// Line is one parsed input line: a device, or why the line is unusable.
type Line struct {
	// Number is the line of the file it starts on, counting from 1.
	Number int
	Device oapi.DeviceCreate
	// Err is why the line is rejected, written for clients; nil for a usable line.
	Err error
}

// Reader yields lines until io.EOF; any other error ends the import. An error that
// wraps ErrBadFile (in a domain.PublicError) says, in words for clients, where the file
// stopped making sense; any other is a read failure.
type Reader interface {
	Next() (Line, error)
}

// NewReader picks the parser for the content type; errors are client errors.
func NewReader(contentType string, body io.Reader) (Reader, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, domain.Public(ErrUnsupportedMedia, "Content-Type must be application/x-ndjson or text/csv")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, domain.Public(ErrUnsupportedMedia, "charset %q; imports are UTF-8", cs)
	}
	switch mt {
	case "application/x-ndjson", "application/jsonl", "application/jsonlines":
		return newNDJSONSource(body), nil
	case "text/csv":
		s, err := newCSVSource(body)
		if err != nil {
			return nil, domain.Public(ErrBadFile, "%v", err)
		}
		return s, nil
	}
	return nil, domain.Public(ErrUnsupportedMedia, "Content-Type must be application/x-ndjson or text/csv")
}

func validOrEmpty(v any) string {
	if id, ok := v.(string); ok && domain.ValidID(id) {
		return id
	}
	return ""
}
