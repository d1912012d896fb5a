package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

type noLimits struct{}

func (noLimits) Global() error                                    { return nil }
func (noLimits) Device(string) error                              { return nil }
func (noLimits) Acquire() (func(), error)                         { return func() {}, nil }
func (noMetrics) RateLimited(string)                              {}
func (noMetrics) TokenRequest(_, _, _ string)                     {}
func (noAudit) Log(audit.Record)                                  {}
func (noMetrics) HTTPRequest(_, _ string, _ int, _ time.Duration) {}

type (
	noMetrics struct{}
	noAudit   struct{}
)

// observedIssuer is the one place a token request that reaches the issuer is recorded:
// counted, audited and, when issued, logged — who and for how long, never the token.
type observedIssuer struct {
	next    TokenIssuer
	metrics Observer
	audit   Auditor
	log     *slog.Logger
}

func (o *observedIssuer) Issue(ctx context.Context, d domain.Device, r tokens.Request) (tokens.Issued, error) {
	return o.issueFor(ctx, "", d, r)
}

// issueFor mints d's token, asked for by gateway on d's behalf ("" when d asked
// itself); the audit record then names both, with the gateway as the actor.
func (o *observedIssuer) issueFor(ctx context.Context, gateway string, d domain.Device, r tokens.Request) (tokens.Issued, error) {
	issued, err := o.next.Issue(ctx, d, r)
	outcome := issueOutcome(err)
	o.metrics.TokenRequest(d.Hub, string(issued.Hub.Kind), outcome)
	rec := audit.Record{
		Event:     "getToken",
		Actor:     cmp.Or(gateway, d.ID),
		Device:    d.ID,
		Gateway:   gateway,
		Module:    r.ModuleID,
		Hub:       d.Hub,
		Outcome:   outcome,
		RequestID: middleware.GetReqID(ctx),
	}
	if err == nil {
		exp := issued.Token.ExpiresAt
		rec.ExpiresAt = &exp
		if o.log.Enabled(ctx, slog.LevelInfo) {
			o.log.LogAttrs(ctx, slog.LevelInfo, "token issued",
				slog.String("device", d.ID),
				slog.String("gateway", gateway),
				slog.String("module", r.ModuleID),
				slog.String("hub", issued.Hub.Name),
				slog.Time("expiresAt", exp),
				slog.String("requestId", rec.RequestID),
			)
		}
	}
	o.audit.Log(rec)
	return issued, err
}

// refused records a request by caller for device's token that never reached the
// issuer: not its child (outcome "forbidden"), the child's rate limit, or the store
// failing to say. Gateway is set only when the caller is one. The metric's hub is the
// caller's and its kind unknown: the device may not exist.
func (o *observedIssuer) refused(ctx context.Context, caller domain.Device, device, module string, err error) {
	outcome := issueOutcome(err)
	switch {
	case errors.Is(err, errNotChild):
		outcome = "forbidden"
	case errors.Is(err, limits.ErrRateLimited):
		outcome = "rate_limited"
	}
	o.metrics.TokenRequest(caller.Hub, "", outcome)
	rec := audit.Record{
		Event:     "getToken",
		Actor:     caller.ID,
		Device:    device,
		Module:    module, // no Hub: the device's is not known (it may not exist)
		Outcome:   outcome,
		RequestID: middleware.GetReqID(ctx),
	}
	if caller.Gateway {
		rec.Gateway = caller.ID
	}
	o.audit.Log(rec)
}

func issueOutcome(err error) string {
	switch {
	case err == nil:
		return "issued"
	case errors.Is(err, tokens.ErrForbidden):
		return "forbidden"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "unavailable"
	case errors.Is(err, domain.ErrInvalid):
		return "invalid"
	}
	return "error"
}

// certificate issues d's certificate through certs and records it as issueFor records
// a token: counted (kind known only once the hub was read), audited with the serial
// number and expiry, logged; never the certificate, the CSR or its key.
func (o *observedIssuer) certificate(ctx context.Context, certs CertificateIssuer, d domain.Device, r devicecert.Request) (devicecert.Issued, error) {
	issued, err := certs.Issue(ctx, d, r)
	outcome := issueOutcome(err)
	o.metrics.TokenRequest(d.Hub, string(issued.Hub.Kind), outcome)
	rec := audit.Record{
		Event:     "getCertificate",
		Actor:     d.ID,
		Device:    d.ID,
		Module:    r.ModuleID,
		Hub:       d.Hub,
		Outcome:   outcome,
		RequestID: middleware.GetReqID(ctx),
	}
	if err == nil {
		exp := issued.ExpiresAt
		rec.ExpiresAt, rec.Serial = &exp, issued.Serial
		if o.log.Enabled(ctx, slog.LevelInfo) {
			o.log.LogAttrs(ctx, slog.LevelInfo, "certificate issued",
				slog.String("device", d.ID),
				slog.String("module", r.ModuleID),
				slog.String("hub", issued.Hub.Name),
				slog.String("serial", issued.Serial),
				slog.Time("expiresAt", exp),
				slog.String("requestId", rec.RequestID),
			)
		}
	}
	o.audit.Log(rec)
	return issued, err
}

// observe times every request by its route pattern, never its raw path, so device IDs
// do not become label values.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			s.deps.Metrics.HTTPRequest(r.Method, route, ww.Status(), time.Since(start))
		}()
		next.ServeHTTP(ww, r)
	})
}

// unbounded are paths the in-flight bound never refuses: probes and scrapes must keep
// answering while the service sheds load.
var unbounded = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// boundInflight refuses with 503 rather than queue when too many requests are in flight.
func (s *Server) boundInflight(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if unbounded[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		release, err := s.deps.Limits.Acquire()
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		defer release()
		next.ServeHTTP(w, r)
	})
}

// refuse counts a limit's refusal and writes it through the error table.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	limit := "unknown"
	var le *limits.Error
	if errors.As(err, &le) {
		limit = le.Limit
	}
	s.deps.Metrics.RateLimited(limit)
	writeError(s.log, w, r, err)
}

// safeMethod reports whether m only reads.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// auditOperator records an operator's change (any unsafe method) after it is served:
// who, which operation, the device and hub it named, and the status. The hub and device
// of a create come from the body's name, deviceId and hub fields; nothing else in the
// body is kept.
func (s *Server) auditOperator(next http.Handler, op string, params map[string]string, p operatorauth.Principal) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if safeMethod(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		rec := audit.Record{
			Event:     op,
			Actor:     p.Subject,
			Role:      string(p.Role),
			Device:    params["deviceId"],
			Hub:       params["name"],
			RequestID: middleware.GetReqID(r.Context()),
		}
		// An import streams an unbounded body (import.go): never buffer it here.
		if r.Body != nil && r.Body != http.NoBody && !streamsBody(r) {
			body, err := io.ReadAll(r.Body)
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
			var named struct {
				Name     string `json:"name"`
				DeviceID string `json:"deviceId"`
				Hub      string `json:"hub"`
			}
			if json.Unmarshal(body, &named) == nil {
				rec.Device = cmp.Or(rec.Device, named.DeviceID)
				rec.Hub = cmp.Or(rec.Hub, named.Hub, named.Name)
			}
		}
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		rec.Status = ww.Status()
		rec.Outcome = "success"
		if rec.Status >= 400 {
			rec.Outcome = "failure"
		}
		s.deps.Audit.Log(rec)
	})
}

// auditDenied records an operator's refused attempt at a change; refused reads are
// not recorded.
func (s *Server) auditDenied(r *http.Request, op string, params map[string]string, p operatorauth.Principal) {
	if safeMethod(r.Method) {
		return
	}
	s.deps.Audit.Log(audit.Record{
		Event:     op,
		Actor:     p.Subject,
		Role:      string(p.Role),
		Device:    params["deviceId"],
		Hub:       params["name"],
		Outcome:   "denied",
		Status:    http.StatusForbidden,
		RequestID: middleware.GetReqID(r.Context()),
	})
}

// errReader replays a read error (e.g. *http.MaxBytesError) after the buffered body, so
// the handlers below see the same failure they would have.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}
