package devicefile

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// csvColumns maps accepted header names (lower case) to DeviceCreate fields; the IoT
// Hub registry's names are aliases.
var csvColumns = map[string]string{
	"deviceid":                               "deviceId",
	"id":                                     "deviceId",
	"hub":                                    "hub",
	"authtype":                               "authType",
	"publickey":                              "publicKey",
	"certfingerprint":                        "certFingerprint",
	"primarykey":                             "primaryKey",
	"secondarykey":                           "secondaryKey",
	"authentication.symmetrickey.primarykey": "primaryKey",
	"authentication.symmetrickey.secondarykey": "secondaryKey",
	"disabled":      "disabled",
	"status":        "status",
	"maxttlseconds": "maxTtlSeconds",
	"gateway":       "gateway",
	// IoT Hub marks IoT Edge devices (the gateways of its parent/child scopes) so.
	"capabilities.iotedge": "gateway",
	"parent":               "parent",
}

// csvSource reads a header row, then one device a record. A record longer than
// MaxLineBytes ends the import (CSV cannot resynchronise inside a quoted field).
type csvSource struct {
	r        *csv.Reader
	lim      *recordLimit
	cols     []string // field per column
	lastLine int
}

// recordLimit fails a read once more than MaxLineBytes (plus one buffer) were read
// since the last record ended.
type recordLimit struct {
	r    io.Reader
	read int64
	mark int64
}

func (l *recordLimit) Read(p []byte) (int, error) {
	if l.read-l.mark > MaxLineBytes+4096 {
		return 0, ErrLineTooLong
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}

func newCSVSource(r io.Reader) (*csvSource, error) {
	lim := &recordLimit{r: r}
	cr := csv.NewReader(lim)
	cr.FieldsPerRecord = 0
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the CSV body is empty; it needs a header row")
		}
		return nil, fmt.Errorf("the CSV header row does not parse: %s", csvReason(err))
	}
	s := &csvSource{r: cr, lim: lim, cols: make([]string, len(header))}
	seen := map[string]bool{}
	for i, h := range header {
		f, ok := csvColumns[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))]
		if !ok {
			return nil, fmt.Errorf("CSV column %d (%.40q) is not one of deviceId, hub, authType, publicKey, certFingerprint, primaryKey, secondaryKey, disabled, maxTtlSeconds, gateway, parent", i+1, h)
		}
		if seen[f] {
			return nil, fmt.Errorf("CSV column %q appears twice", f)
		}
		seen[f] = true
		s.cols[i] = f
	}
	for _, f := range []string{"deviceId", "hub", "authType"} {
		if !seen[f] {
			return nil, fmt.Errorf("the CSV header has no %s column", f)
		}
	}
	lim.mark = cr.InputOffset()
	return s, nil
}

func csvReason(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	if errors.Is(err, ErrLineTooLong) {
		return err.Error()
	}
	return "read error"
}

func (s *csvSource) Next() (Line, error) {
	rec, err := s.r.Read()
	if errors.Is(err, io.EOF) {
		return Line{}, io.EOF
	}
	s.lim.mark = s.r.InputOffset()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				return Line{Number: pe.StartLine, Err: errors.New("wrong number of fields")}, nil
			}
			return Line{}, domain.Public(ErrBadFile, "CSV record at line %d: %s", pe.StartLine, csvReason(err))
		}
		return Line{}, domain.Public(ErrBadFile, "CSV record after line %d: %s", s.lastLine, csvReason(err))
	}
	line, _ := s.r.FieldPos(0)
	s.lastLine = line
	obj := map[string]any{}
	auth := map[string]any{}
	for i, v := range rec {
		if v == "" {
			continue
		}
		switch f := s.cols[i]; f {
		case "authType":
			auth["type"] = v
		case "publicKey":
			auth["publicKey"] = v
		case "certFingerprint":
			auth["certFingerprint"] = v
		case "disabled", "status":
			b, ok := map[string]bool{"true": true, "false": false, "disabled": true, "enabled": false}[strings.ToLower(v)]
			if !ok {
				return Line{Number: line, Device: oapi.DeviceCreate{DeviceId: validOrEmpty(obj["deviceId"])}, Err: fmt.Errorf("column %s: want true/false or enabled/disabled", f)}, nil
			}
			obj["disabled"] = b
		case "gateway":
			b, ok := map[string]bool{"true": true, "false": false}[strings.ToLower(v)]
			if !ok {
				return Line{Number: line, Device: oapi.DeviceCreate{DeviceId: validOrEmpty(obj["deviceId"])}, Err: errors.New("column gateway: want true or false")}, nil
			}
			obj["gateway"] = b
		case "maxTtlSeconds":
			n, err := strconv.Atoi(v)
			if err != nil {
				return Line{Number: line, Device: oapi.DeviceCreate{DeviceId: validOrEmpty(obj["deviceId"])}, Err: errors.New("column maxTtlSeconds: not an integer")}, nil
			}
			obj["maxTtlSeconds"] = n
		default:
			obj[f] = v
		}
	}
	if len(auth) > 0 {
		obj["auth"] = auth
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return Line{Number: line, Err: errors.New("record does not encode")}, nil
	}
	d, perr := parseDeviceLine(b)
	return Line{Number: line, Device: d, Err: perr}, nil
}
