package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/registry/devicefile"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// Errors the HTTP layer raises itself.
var (
	errOperatorAuth = errors.New("a valid operator bearer token is required")
	errBadRequest   = errors.New("bad request")
	errTooLarge     = errors.New("request body too large")
	errNoRoute      = errors.New("no such resource")
	errNoMethod     = errors.New("method not allowed")
)

// retryAfterSeconds is what 503 responses ask clients to wait unless the error says
// (limits' refusals and the key cache's breaker carry their own RetryAfter).
const retryAfterSeconds = 2

// problemSpec is how one class of error reaches clients.
type problemSpec struct {
	err    error
	status int
	// detail is shown to the client; empty means the error's domain.PublicError
	// message when it has one, else the sentinel's own words.
	detail string
}

// problems is the one table mapping domain errors to HTTP. Order matters: first match wins.
var problems = []problemSpec{
	{deviceauth.ErrUnauthenticated, http.StatusUnauthorized, "device authentication failed"},
	{errOperatorAuth, http.StatusUnauthorized, "a valid operator bearer token is required"},
	{operatorauth.ErrForbidden, http.StatusForbidden, "the operator's role does not allow this operation"},
	{tokens.ErrForbidden, http.StatusForbidden, "the device may not have a token for that identity"},
	{errNotChild, http.StatusForbidden, "the caller may not have tokens for that device"},
	{errNotGateway, http.StatusForbidden, ""},
	{domain.ErrInvalid, http.StatusBadRequest, ""},
	{registry.ErrNotSupported, http.StatusConflict, ""},
	{devicecert.ErrImportNotSupported, http.StatusConflict, ""},
	{errBadRequest, http.StatusBadRequest, ""},
	{errTooLarge, http.StatusRequestEntityTooLarge, "request body too large"},
	{errUnsupportedMedia, http.StatusUnsupportedMediaType, ""},
	{devicefile.ErrUnsupportedMedia, http.StatusUnsupportedMediaType, ""},
	{devicefile.ErrBadFile, http.StatusBadRequest, ""},
	{errNoRoute, http.StatusNotFound, ""},
	{errNoMethod, http.StatusMethodNotAllowed, ""},
	{store.ErrNotFound, http.StatusNotFound, ""},
	{store.ErrExists, http.StatusConflict, ""},
	{store.ErrConflict, http.StatusConflict, ""},
	{store.ErrUnavailable, http.StatusServiceUnavailable, "the key store is unavailable; retry later"},
	{limits.ErrRateLimited, http.StatusTooManyRequests, "rate limit exceeded; retry after the Retry-After delay"},
	{limits.ErrOverloaded, http.StatusServiceUnavailable, "the service is busy; retry after the Retry-After delay"},
	// The client went away or ran out of time; nobody reads this, but it is no server fault.
	{context.Canceled, http.StatusServiceUnavailable, "request canceled"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "request timed out; retry later"},
}

// problem is an RFC 9457 problem document.
type problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// classify maps err through the table to a status and the detail a client may see.
// Only words written for clients reach them: the table's, a domain.PublicError's, or
// the sentinel's own; anything unexpected is a generic 500.
func classify(err error) (status int, detail string) {
	for _, p := range problems {
		if !errors.Is(err, p.err) {
			continue
		}
		if p.detail != "" {
			return p.status, p.detail
		}
		if pe, ok := errors.AsType[*domain.PublicError](err); ok {
			return p.status, pe.Public()
		}
		return p.status, p.err.Error()
	}
	return http.StatusInternalServerError, "internal error"
}

// writeError maps err through the table and writes the problem. Unexpected errors are
// logged and reach the client only as a generic 500.
func writeError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	status, detail := classify(err)
	switch {
	case errors.Is(err, context.Canceled):
	case errors.Is(err, limits.ErrOverloaded):
		// Shedding load is expected under pressure; the metric counts it, a log line per
		// refusal would only add to the load.
	case status >= 500:
		log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("path", r.URL.Path), slog.Int("status", status), slog.String("error", err.Error()))
	case status == http.StatusUnauthorized:
		// The reason stays in the log so operators can debug a device; the client learns nothing.
		log.LogAttrs(r.Context(), slog.LevelInfo, "authentication failed", slog.String("path", r.URL.Path), slog.String("reason", err.Error()))
	}
	retryAfter := retryAfterSeconds
	var ra interface{ RetryAfter() int }
	if errors.As(err, &ra) {
		retryAfter = ra.RetryAfter()
	}
	writeProblem(w, r, status, detail, retryAfter)
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, detail string, retryAfter int) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	switch status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="tokensvc"`)
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(max(retryAfter, 1)))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{
		Type:     "about:blank",
		Title:    http.StatusText(status),
		Status:   status,
		Detail:   detail,
		Instance: r.URL.Path,
	})
}
