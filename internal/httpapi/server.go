// Package httpapi serves the contract in api/openapi.yaml: it validates requests against
// the spec, authenticates operators and devices as the spec's security requirements say,
// calls the domain packages and maps their errors to problem+json in one table.
package httpapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/tokensvc/tokensvc/api"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 1 << 20

// Security scheme names in api/openapi.yaml.
const (
	schemeAdmin  = "adminToken"
	schemeDevice = "deviceAssertion"
)

// AdminChecker checks the static admin token.
type AdminChecker interface {
	Check(token string) bool
}

// OperatorAuthenticator authenticates operator requests (the spec's adminToken scheme).
type OperatorAuthenticator interface {
	// Authenticate returns the operator r's bearer token proves; errors wrap
	// operatorauth.ErrUnauthenticated.
	Authenticate(r *http.Request) (operatorauth.Principal, error)
}

// DeviceVerifier turns a device assertion into the device it proves.
type DeviceVerifier interface {
	Verify(ctx context.Context, assertion string) (domain.Device, error)
}

// CertVerifier authenticates devices by TLS client certificate (mutual TLS).
type CertVerifier interface {
	// VerifyCert returns the device the chain (leaf first) proves; errors wrap
	// deviceauth.ErrUnauthenticated, or store.ErrUnavailable when the device could
	// not be looked up.
	VerifyCert(ctx context.Context, certs []*x509.Certificate) (domain.Device, error)
}

// TokenIssuer mints tokens for authenticated devices.
type TokenIssuer interface {
	Issue(ctx context.Context, d domain.Device, r tokens.Request) (tokens.Issued, error)
}

// Limiter refuses requests beyond the configured rates and concurrency. Refusals are
// errors that wrap limits.ErrRateLimited or limits.ErrOverloaded and carry a
// RetryAfter() int in seconds.
type Limiter interface {
	// Global takes from the service-wide bucket.
	Global() error
	// Device takes from one authenticated device's bucket.
	Device(id string) error
	// Acquire claims an in-flight slot without waiting.
	Acquire() (release func(), err error)
}

// Observer receives the service's metrics. Label values are bounded: route patterns,
// hub names and kinds, outcomes; never device IDs. HTTPRequest gets the request's raw
// method; implementations fold nonstandard ones into one value.
type Observer interface {
	HTTPRequest(method, route string, status int, d time.Duration)
	RateLimited(limit string)
	TokenRequest(hub, kind, outcome string)
}

// Auditor records issued tokens and operator changes.
type Auditor interface {
	Log(r audit.Record)
}

// Deps are what the API needs.
type Deps struct {
	Store    store.Store
	Registry *registry.Registry
	Issuer   TokenIssuer
	Devices  DeviceVerifier
	// Certs authenticates devices by TLS client certificate on requests without an
	// Authorization header; nil (mutual TLS off) ignores client certificates.
	Certs CertVerifier
	// Admin checks the static admin token; used when Operators is nil.
	Admin AdminChecker
	// Operators authenticates operators (static admin token, OIDC JWTs); nil means
	// the static admin token only.
	Operators OperatorAuthenticator
	// Limits bounds request rates and concurrency; nil means no limits.
	Limits Limiter
	// Metrics observes requests and tokens; nil means none.
	Metrics Observer
	// MetricsHandler serves GET /metrics when set (nil when metrics are served on a
	// separate listener, or not at all).
	MetricsHandler http.Handler
	// Audit receives one record per token request and operator change; nil means none.
	Audit Auditor
	// Ready reports whether the service can serve: an error makes /readyz 503; a
	// non-empty note (e.g. Vault unreachable while cached keys are served) reports
	// "degraded" with 200. Nil means always ready.
	Ready  func(ctx context.Context) (note string, err error)
	Logger *slog.Logger
}

// Server implements the generated strict server interface.
type Server struct {
	deps Deps
	log  *slog.Logger
}

var _ oapiserver.StrictServerInterface = (*Server)(nil)

// New returns the service's HTTP handler.
func New(d Deps) (http.Handler, error) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Limits == nil {
		d.Limits = noLimits{}
	}
	if d.Metrics == nil {
		d.Metrics = noMetrics{}
	}
	if d.Audit == nil {
		d.Audit = noAudit{}
	}
	if d.Operators == nil {
		d.Operators = operatorauth.New(d.Admin, nil)
	}
	d.Issuer = &observedIssuer{next: d.Issuer, metrics: d.Metrics, audit: d.Audit}
	s := &Server{deps: d, log: d.Logger}

	spec, err := loadSpec()
	if err != nil {
		return nil, err
	}
	security, err := securityByOperation(spec)
	if err != nil {
		return nil, err
	}
	limited := globallyLimited(spec)
	adminOnly := taggedAdmin(spec)

	r := chi.NewRouter()
	// Metrics outermost but for the request ID, so every status is observed (panics
	// included); the in-flight bound before anything costly, probes exempt.
	r.Use(middleware.RequestID, s.observe, s.recoverer, s.accessLog, s.boundInflight, limitBody)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeError(s.log, w, r, errNoRoute) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeError(s.log, w, r, errNoMethod) })
	r.Get("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(api.Spec)
	})
	if d.MetricsHandler != nil {
		r.Method(http.MethodGet, "/metrics", d.MetricsHandler)
	}

	strict := oapiserver.NewStrictHandlerWithOptions(s,
		[]oapiserver.StrictMiddlewareFunc{withAccept},
		oapiserver.StrictHTTPServerOptions{
			RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, _ error) {
				// The decoder's words name Go types; the spec validator has already said
				// what is wrong for anything the spec describes.
				writeError(s.log, w, r, domain.Public(errBadRequest, "request body could not be decoded"))
			},
			ResponseErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
				writeError(s.log, w, r, err)
			},
		})
	spec.Servers = nil // match paths only, whatever host the service is reached on
	router, err := gorillamux.NewRouter(spec)
	if err != nil {
		return nil, fmt.Errorf("route api spec: %w", err)
	}
	validator := s.validate(openapi3filter.Options{
		// Authentication already happened in s.authenticate, before any parsing.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	}, nothingToValidate(spec))
	r.Group(func(g chi.Router) {
		// Authenticate first, so unauthenticated callers cannot make the service parse
		// bodies or learn the schema; then hold JSON bodies to one strict reading; then
		// validate them against the spec.
		g.Use(s.authenticate(router, security, limited, adminOnly), s.strictJSON, validator)
		oapiserver.HandlerWithOptions(strict, oapiserver.ChiServerOptions{
			BaseRouter: g,
			ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
				writeError(s.log, w, r, domain.Public(errBadRequest, "%v", err))
			},
		})
	})
	return r, nil
}

func loadSpec() (*openapi3.T, error) {
	spec, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("load api spec: %w", err)
	}
	return spec, nil
}

// securityByOperation reads which scheme guards each operation from the spec (an
// operation's own security, else the document's), so the spec stays the only place that
// says so. "" marks an operation the spec explicitly leaves public with `security: []`.
func securityByOperation(spec *openapi3.T) (map[string]string, error) {
	out := make(map[string]string)
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			reqs := spec.Security
			if op.Security != nil {
				reqs = *op.Security
			}
			switch {
			case reqs == nil:
				return nil, fmt.Errorf("operation %s: no security requirement; write security: [] to make it public", op.OperationID)
			case len(reqs) == 0:
				out[op.OperationID] = ""
			case len(reqs) == 1 && len(reqs[0]) == 1:
				for name := range reqs[0] {
					if name != schemeAdmin && name != schemeDevice {
						return nil, fmt.Errorf("operation %s: unknown security scheme %q", op.OperationID, name)
					}
					out[op.OperationID] = name
				}
			default:
				return nil, fmt.Errorf("operation %s: want exactly one security scheme", op.OperationID)
			}
		}
	}
	return out, nil
}

// validationError turns a spec violation into a client message that names the field and
// the rule but never echoes the value.
func validationError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errTooLarge
	}
	if errors.Is(err, routers.ErrMethodNotAllowed) {
		return errNoMethod
	}
	if errors.Is(err, routers.ErrPathNotFound) {
		return errNoRoute
	}
	var reqErr *openapi3filter.RequestError
	if errors.As(err, &reqErr) {
		where := "request"
		switch {
		case reqErr.Parameter != nil:
			where = fmt.Sprintf("%s parameter %q", reqErr.Parameter.In, reqErr.Parameter.Name)
		case reqErr.RequestBody != nil:
			where = "request body"
		}
		var schemaErr *openapi3.SchemaError
		if errors.As(reqErr.Err, &schemaErr) {
			if p := schemaErr.JSONPointer(); len(p) > 0 {
				where += " field /" + strings.Join(p, "/")
			}
			return domain.Public(errBadRequest, "%s: %s", where, schemaErr.Reason)
		}
		reason := reqErr.Reason
		if reason == "" && reqErr.Err != nil {
			reason = firstLine(reqErr.Err.Error())
		}
		return domain.Public(errBadRequest, "%s: %s", where, reason)
	}
	return domain.Public(errBadRequest, "%s", firstLine(err.Error()))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

type ctxKey int

const (
	routedKey ctxKey = iota
	acceptKey
)

// routed is what authentication learnt about a request, for the middleware and handler
// after it: the spec operation it routes to, its path parameters and, for device
// operations, the device that proved itself.
type routed struct {
	route  *routers.Route
	params map[string]string
	device domain.Device
}

// routedOf returns the request's routing; authenticate sets it before anything else
// behind it runs.
func routedOf(ctx context.Context) *routed {
	rt, _ := ctx.Value(routedKey).(*routed)
	return rt
}

// globallyLimited lists the operations that document 429: the service-wide bucket
// guards exactly those, so the spec stays the one place that says which are limited.
func globallyLimited(spec *openapi3.T) map[string]bool {
	out := make(map[string]bool)
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			if op.Responses != nil && op.Responses.Value("429") != nil {
				out[op.OperationID] = true
			}
		}
	}
	return out
}

// taggedAdmin lists the operations tagged "admin" in the spec (admin-token management):
// only the admin role may call them.
func taggedAdmin(spec *openapi3.T) map[string]bool {
	out := make(map[string]bool)
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			for _, tag := range op.Tags {
				if tag == "admin" {
					out[op.OperationID] = true
				}
			}
		}
	}
	return out
}

// authenticate enforces the security requirement of the operation a request routes to,
// before anything else looks at it. Requests that route nowhere get their 404 or 405
// here. The service-wide rate limit applies before authentication
// (it protects the verifier too); a device's own limit after it, keyed by the device
// the assertion or client certificate proved, so no caller can spend another device's
// bucket.
func (s *Server) authenticate(router routers.Router, security map[string]string, limited, adminOnly map[string]bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			route, params, err := router.FindRoute(r)
			if err != nil {
				// Answer 404/405 here rather than pass the request on: nothing behind this
				// point may ever see a request that was not authenticated for its route.
				writeError(s.log, w, r, validationError(err))
				return
			}
			rt := &routed{route: route, params: params}
			r = r.WithContext(context.WithValue(r.Context(), routedKey, rt))
			op := route.Operation.OperationID
			if limited[op] {
				if err := s.deps.Limits.Global(); err != nil {
					s.refuse(w, r, err)
					return
				}
			}
			scheme, known := security[op]
			switch {
			case !known:
				// Fail closed: an operation without a security entry is never served.
				writeError(s.log, w, r, fmt.Errorf("operation %s has no security entry", op))
			case scheme == schemeAdmin:
				p, err := s.deps.Operators.Authenticate(r)
				if err != nil {
					writeError(s.log, w, r, fmt.Errorf("%w: %w", errOperatorAuth, err))
					return
				}
				if err := operatorauth.Allow(p.Role, r.Method, adminOnly[op]); err != nil {
					s.auditDenied(r, op, params, p)
					writeError(s.log, w, r, fmt.Errorf("%w: %s (role %q) calling %s", err, p.Subject, p.Role, op))
					return
				}
				s.auditOperator(next, op, params, p).ServeHTTP(w, r)
			case scheme == schemeDevice:
				dev, err := s.verifyDevice(r)
				if err != nil {
					writeError(s.log, w, r, err)
					return
				}
				if err := s.deps.Limits.Device(dev.ID); err != nil {
					s.refuse(w, r, err)
					return
				}
				rt.device = dev
				next.ServeHTTP(w, r)
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

// validate holds requests to the spec (parameters, bodies) with the route authenticate
// found, so each request is routed once. An import streams and validates each line
// against DeviceCreate itself (import.go): the spec validator would read the whole body.
func (s *Server) validate(opts openapi3filter.Options, trivial map[string]bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rt := routedOf(r.Context())
			if streamsBody(r) || (r.URL.RawQuery == "" && trivial[rt.route.Operation.OperationID]) {
				next.ServeHTTP(w, r)
				return
			}
			in := &openapi3filter.RequestValidationInput{Request: r, PathParams: rt.params, Route: rt.route, Options: &opts}
			if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
				writeError(s.log, w, r, validationError(err))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// nothingToValidate lists the operations whose requests have nothing the spec could
// reject when they carry no query string: no request body, no path, header or cookie
// parameters, no required parameter. GET /token is one; skipping the validator there
// changes no outcome and saves a good part of the request's cost.
func nothingToValidate(spec *openapi3.T) map[string]bool {
	out := make(map[string]bool)
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			ok := op.RequestBody == nil
			for _, p := range slices.Concat(item.Parameters, op.Parameters) {
				if p.Value == nil || p.Value.In != openapi3.ParameterInQuery || p.Value.Required {
					ok = false
				}
			}
			out[op.OperationID] = ok
		}
	}
	return out
}

// verifyDevice authenticates the device a GET /token request comes from: by its TLS
// client certificate when mutual TLS is on and the request carries no Authorization
// header, else by its assertion. Which of the two a device may use is pinned by its
// credential (deviceauth), so offering the other one only gets the usual 401.
func (s *Server) verifyDevice(r *http.Request) (domain.Device, error) {
	if s.deps.Certs != nil && r.Header.Get("Authorization") == "" && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return s.deps.Certs.VerifyCert(r.Context(), r.TLS.PeerCertificates)
	}
	return s.deps.Devices.Verify(r.Context(), bearer(r))
}

// withAccept hands the Accept header to handlers that negotiate content.
func withAccept(next oapiserver.StrictHandlerFunc, _ string) oapiserver.StrictHandlerFunc {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		return next(context.WithValue(ctx, acceptKey, r.Header.Get("Accept")), w, r, req)
	}
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An import streams; it bounds each line itself (import.go).
		if r.Body != nil && !streamsBody(r) {
			r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				writeError(s.log, w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// accessLog logs one line per request: never headers, bodies or query values that could
// hold secrets.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.Enabled(r.Context(), slog.LevelInfo) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		// observe has usually wrapped w already; its counts are the ones needed here.
		ww, ok := w.(middleware.WrapResponseWriter)
		if !ok {
			ww = middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		}
		next.ServeHTTP(ww, r)
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", ww.Status()),
			slog.Int("bytes", ww.BytesWritten()),
			slog.Duration("duration", time.Since(start)),
			slog.String("requestId", middleware.GetReqID(r.Context())),
		)
	})
}
