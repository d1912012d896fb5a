package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/registry/devicefile"
	"github.com/tokensvc/tokensvc/internal/store"
)

// importPath is the one route whose body streams: it is exempt from the body limit and
// from whole-body spec validation (each line is validated against DeviceCreate instead).
const importPath = "/devices/import"

// DefaultImportWorkers is how many lines of an import are imported at once unless
// Deps.ImportWorkers says otherwise (the service sets it per store: app's
// importWorkers). It is the Vault store's knee: its hub markers are shared by the
// creates in flight (16 801/s, 64 1,398/s, 128 1,268/s).
const DefaultImportWorkers = 64

// importIdle is how long an import may wait for its next line or for the client to read
// the report, renewed line by line, so a large import outlives the server's timeouts.
const importIdle = 30 * time.Second

// streamsBody reports whether r is an import, whose body is read as it streams.
func streamsBody(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == importPath
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
	src, err := devicefile.NewReader(req.ContentType, req.Body)
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
	src  devicefile.Reader
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
	run := &importRun{st: st, rc: rc, emitTo: func(r importReport) error {
		_ = rc.SetWriteDeadline(time.Now().Add(importIdle))
		return enc.Encode(r)
	}}
	return run.run()
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
