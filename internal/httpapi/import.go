package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tokensvc/tokensvc/api"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/store"
)

// importPath is the one route whose body streams: it is exempt from the body limit and
// from whole-body spec validation (each line is validated against DeviceCreate instead).
const importPath = "/devices/import"

// MaxImportLineBytes bounds one NDJSON line or CSV record of an import.
const MaxImportLineBytes = 64 << 10

// importIdle is how long an import may wait for its next line or for the client to read
// the report, renewed line by line, so a large import outlives the server's timeouts.
const importIdle = 30 * time.Second

// streamsBody reports whether r is an import, whose body is read as it streams.
func streamsBody(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == importPath
}

var errImportLineTooLong = fmt.Errorf("line longer than %d bytes", MaxImportLineBytes)

// importLine is one parsed input line: a device, or why the line is unusable.
type importLine struct {
	line   int
	device oapi.DeviceCreate
	err    error // a rejection reason, safe to show
}

// importSource yields lines until io.EOF; any other error ends the import.
type importSource interface {
	next() (importLine, error)
}

var deviceCreateSchema = sync.OnceValues(func() (*openapi3.Schema, error) {
	spec, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, err
	}
	ref := spec.Components.Schemas["DeviceCreate"]
	if ref == nil || ref.Value == nil {
		return nil, errors.New("spec has no DeviceCreate schema")
	}
	return ref.Value, nil
})

// parseDeviceLine holds one JSON object to the same rules as a POST /devices body: one
// strict JSON value, valid against DeviceCreate. Reasons name fields, never values.
func parseDeviceLine(b []byte) (oapi.DeviceCreate, error) {
	var out oapi.DeviceCreate
	if err := checkJSON(b); err != nil {
		return out, err
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return out, errors.New("not a JSON object")
	}
	schema, err := deviceCreateSchema()
	if err != nil {
		return out, err
	}
	if err := schema.VisitJSON(generic, openapi3.MultiErrors()); err != nil {
		// Name the device in the report when the line names one validly.
		if obj, ok := generic.(map[string]any); ok {
			if id, ok := obj["deviceId"].(string); ok && domain.ValidID(id) {
				out.DeviceId = id
			}
		}
		return out, schemaReason(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, errors.New("not a DeviceCreate object")
	}
	return out, nil
}

// schemaReason reduces a schema error to its first rule and field.
func schemaReason(err error) error {
	var me openapi3.MultiError
	if errors.As(err, &me) && len(me) > 0 {
		err = me[0]
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		where := "device"
		if p := se.JSONPointer(); len(p) > 0 {
			where = "field /" + strings.Join(p, "/")
		}
		return fmt.Errorf("%s: %s", where, se.Reason)
	}
	return errors.New("does not match DeviceCreate")
}

// ndjsonSource reads one DeviceCreate per line; a bad line is reported and skipped.
type ndjsonSource struct {
	r    *bufio.Reader
	line int
}

func newNDJSONSource(r io.Reader) *ndjsonSource {
	return &ndjsonSource{r: bufio.NewReaderSize(r, MaxImportLineBytes)}
}

func (s *ndjsonSource) next() (importLine, error) {
	for {
		b, err := s.r.ReadSlice('\n')
		if len(b) == 0 && err != nil {
			return importLine{}, err
		}
		s.line++
		if errors.Is(err, bufio.ErrBufferFull) {
			// Discard the rest of the line and report it; the next line starts fresh.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = s.r.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return importLine{}, err
			}
			return importLine{line: s.line, err: errImportLineTooLong}, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return importLine{}, err
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			if err != nil {
				return importLine{}, err
			}
			continue
		}
		d, perr := parseDeviceLine(b)
		return importLine{line: s.line, device: d, err: perr}, nil
	}
}

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
}

// csvSource reads a header row, then one device a record. A record longer than
// MaxImportLineBytes ends the import (CSV cannot resynchronise inside a quoted field).
type csvSource struct {
	r        *csv.Reader
	lim      *recordLimit
	cols     []string // field per column
	lastLine int
}

// recordLimit fails a read once more than MaxImportLineBytes (plus one buffer) were read
// since the last record ended.
type recordLimit struct {
	r    io.Reader
	read int64
	mark int64
}

func (l *recordLimit) Read(p []byte) (int, error) {
	if l.read-l.mark > MaxImportLineBytes+4096 {
		return 0, errImportLineTooLong
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
			return nil, fmt.Errorf("CSV column %d (%.40q) is not one of deviceId, hub, authType, publicKey, certFingerprint, primaryKey, secondaryKey, disabled, maxTtlSeconds", i+1, h)
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
	if errors.Is(err, errImportLineTooLong) {
		return err.Error()
	}
	return "read error"
}

func (s *csvSource) next() (importLine, error) {
	rec, err := s.r.Read()
	if errors.Is(err, io.EOF) {
		return importLine{}, io.EOF
	}
	s.lim.mark = s.r.InputOffset()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				return importLine{line: pe.StartLine, err: errors.New("wrong number of fields")}, nil
			}
			return importLine{}, fmt.Errorf("CSV record at line %d: %s", pe.StartLine, csvReason(err))
		}
		return importLine{}, fmt.Errorf("CSV record after line %d: %s", s.lastLine, csvReason(err))
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
				return importLine{line: line, device: oapi.DeviceCreate{DeviceId: validOrEmpty(obj["deviceId"])}, err: fmt.Errorf("column %s: want true/false or enabled/disabled", f)}, nil
			}
			obj["disabled"] = b
		case "maxTtlSeconds":
			n, err := strconv.Atoi(v)
			if err != nil {
				return importLine{line: line, device: oapi.DeviceCreate{DeviceId: validOrEmpty(obj["deviceId"])}, err: errors.New("column maxTtlSeconds: not an integer")}, nil
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
		return importLine{line: line, err: errors.New("record does not encode")}, nil
	}
	d, perr := parseDeviceLine(b)
	return importLine{line: line, device: d, err: perr}, nil
}

func validOrEmpty(v any) string {
	if id, ok := v.(string); ok && domain.ValidID(id) {
		return id
	}
	return ""
}

// newImportSource picks the parser for the content type; errors are client errors.
func newImportSource(contentType string, body io.Reader) (importSource, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, domain.Public(errUnsupportedMedia, "Content-Type must be application/x-ndjson or text/csv")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, domain.Public(errUnsupportedMedia, "charset %q; imports are UTF-8", cs)
	}
	switch mt {
	case "application/x-ndjson", "application/jsonl", "application/jsonlines":
		return newNDJSONSource(body), nil
	case "text/csv":
		s, err := newCSVSource(body)
		if err != nil {
			return nil, domain.Public(errBadRequest, "%v", err)
		}
		return s, nil
	}
	return nil, domain.Public(errUnsupportedMedia, "Content-Type must be application/x-ndjson or text/csv")
}

// importReport is one line of the streamed report.
type importReport struct {
	Line         int              `json:"line,omitempty"`
	DeviceID     string           `json:"deviceId,omitempty"`
	Result       string           `json:"result"`
	Reason       string           `json:"reason,omitempty"`
	PrimaryKey   string           `json:"primaryKey,omitempty"`
	SecondaryKey string           `json:"secondaryKey,omitempty"`
	Modules      []importedModule `json:"modules,omitempty"`
	Auth         *importedAuth    `json:"auth,omitempty"`
	Summary      *importSummary   `json:"summary,omitempty"`
	Error        string           `json:"error,omitempty"`
}

type importedModule struct {
	ModuleID     string `json:"moduleId"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

type importedAuth struct {
	Type   string `json:"type"`
	Secret string `json:"secret,omitempty"`
}

type importSummary struct {
	Created  int `json:"created"`
	Skipped  int `json:"skipped"`
	Rejected int `json:"rejected"`
}

// ImportDevices checks the content type and (for CSV) the header before answering, so
// those fail as problems; from then on every outcome is a report line.
func (s *Server) ImportDevices(ctx context.Context, req oapiserver.ImportDevicesRequestObject) (oapiserver.ImportDevicesResponseObject, error) {
	src, err := newImportSource(req.ContentType, req.Body)
	if err != nil {
		return nil, err
	}
	body, _ := req.Body.(io.Closer)
	return &importStream{ctx: ctx, s: s, src: src, body: body}, nil
}

// importStream runs the import while it writes the response.
type importStream struct {
	ctx  context.Context
	s    *Server
	src  importSource
	body io.Closer // the request body, closed when the import ends
}

func (st *importStream) VisitImportDevicesResponse(w http.ResponseWriter) error {
	rc := http.NewResponseController(w)
	// HTTP/1 servers otherwise consume the whole request body before the first write.
	if err := rc.EnableFullDuplex(); err != nil {
		st.s.log.WarnContext(st.ctx, "import cannot stream its report", "error", err.Error())
	}
	if st.body != nil {
		// An import that stops early leaves body unread; closed, net/http ends the
		// connection cleanly instead of panicking as it looks for the next request on
		// a full-duplex one (golang/go#68560).
		defer st.body.Close()
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", noStore)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	var sum importSummary
	emit := func(r importReport) error {
		_ = rc.SetWriteDeadline(time.Now().Add(importIdle))
		if err := enc.Encode(r); err != nil {
			return err
		}
		_ = rc.Flush()
		return nil
	}
	finish := func(fatal string) error {
		st.s.log.InfoContext(st.ctx, "devices imported", "created", sum.Created, "skipped", sum.Skipped, "rejected", sum.Rejected, "stopped", fatal != "")
		return emit(importReport{Result: "summary", Summary: &sum, Error: fatal})
	}
	for {
		_ = rc.SetReadDeadline(time.Now().Add(importIdle))
		l, err := st.src.next()
		if errors.Is(err, io.EOF) {
			return finish("")
		}
		if err != nil {
			reason := "reading the body failed; the import stopped here"
			if errors.Is(err, errImportLineTooLong) || strings.HasPrefix(err.Error(), "CSV record") {
				reason = err.Error() + "; the import stopped here"
			}
			return finish(reason)
		}
		rep := importReport{Line: l.line, DeviceID: l.device.DeviceId}
		if l.err != nil {
			sum.Rejected++
			rep.Result, rep.Reason = string(registry.Rejected), l.err.Error()
			if err := emit(rep); err != nil {
				return err
			}
			continue
		}
		c, result, err := st.s.deps.Registry.ImportDevice(st.ctx, deviceFromAPI(l.device))
		if err != nil && result == "" {
			// The store failed: stop rather than report every following line the same.
			st.s.log.ErrorContext(st.ctx, "import failed", "line", l.line, "error", err.Error())
			return finish(fmt.Sprintf("line %d: %s; the import stopped here, lines before it are done", l.line, storeTrouble(err)))
		}
		rep.Result = string(result)
		switch result {
		case registry.Imported:
			sum.Created++
			d := c.Device
			st.s.log.InfoContext(st.ctx, "device created", "device", d.ID, "hub", d.Hub, "auth", d.Auth.Type, "via", "import")
			rep.PrimaryKey, rep.SecondaryKey = d.PrimaryKey, d.SecondaryKey
			rep.Auth = &importedAuth{Type: string(d.Auth.Type), Secret: c.Secret}
			for _, m := range d.Modules {
				rep.Modules = append(rep.Modules, importedModule{m.ID, m.PrimaryKey, m.SecondaryKey})
			}
		case registry.Skipped:
			sum.Skipped++
		default:
			sum.Rejected++
			rep.Reason = clientReason(err)
		}
		if err := emit(rep); err != nil {
			return err
		}
	}
}

// clientReason is the client-facing text of a rejection: the same words the problem
// table would show.
func clientReason(err error) string {
	if status, detail := classify(err); status != http.StatusInternalServerError {
		return detail
	}
	return "rejected"
}

func storeTrouble(err error) string {
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return "the key store is unavailable"
	}
	if errors.Is(err, context.Canceled) {
		return "request canceled"
	}
	return "internal error"
}
