// Package httpapi serves the contract in api/openapi.yaml: it validates requests against
// the spec, authenticates operators and devices as the spec's security requirements say,
// calls the domain packages and maps their errors to problem+json in one table.
package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/tokensvc/tokensvc/api"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 1 << 20

// Security scheme names in api/openapi.yaml.
const (
	schemeAdmin  = "adminToken"
	schemeDevice = "deviceAssertion"
)

// Server implements the generated strict server interface.
type Server struct {
	deps Deps
	log  *slog.Logger
	// issuer is deps.Issuer, observed: child tokens are audited with their gateway.
	issuer *observedIssuer
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
	issuer := &observedIssuer{next: d.Issuer, metrics: d.Metrics, audit: d.Audit, log: d.Logger}
	d.Issuer = issuer
	s := &Server{deps: d, log: d.Logger, issuer: issuer}

	spec, err := loadSpec()
	if err != nil {
		return nil, err
	}
	rules, err := specRules(spec)
	if err != nil {
		return nil, err
	}

	r := chi.NewRouter()
	// Metrics outermost but for the request ID, so every status is observed (panics
	// included); the in-flight bound before anything costly, probes exempt.
	r.Use(requestID, s.observe, s.recoverer, s.accessLog, s.boundInflight, limitBody)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeError(s.log, w, r, errNoRoute) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeError(s.log, w, r, errNoMethod) })
	r.Get("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(api.Spec)
	})
	if d.MetricsHandler != nil {
		r.Method(http.MethodGet, "/metrics", d.MetricsHandler)
	}

	strictOpts := oapiserver.StrictHTTPServerOptions{
		RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, _ error) {
			// The decoder's words name Go types; the spec validator has already said
			// what is wrong for anything the spec describes.
			writeError(s.log, w, r, domain.Public(errBadRequest, "request body could not be decoded"))
		},
		ResponseErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(s.log, w, r, err)
		},
	}
	// No strict middleware: serveGetToken (tokenroute.go) relies on there being none.
	strict := oapiserver.NewStrictHandlerWithOptions(s, nil, strictOpts)
	spec.Servers = nil // match paths only, whatever host the service is reached on
	mux, err := gorillamux.NewRouter(spec)
	if err != nil {
		return nil, fmt.Errorf("route api spec: %w", err)
	}
	router, err := newStaticRoutes(spec, mux)
	if err != nil {
		return nil, err
	}
	validator := s.validate(openapi3filter.Options{
		// Authentication already happened in s.authenticate, before any parsing.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	}, rules)
	r.Group(func(g chi.Router) {
		// Authenticate first, so unauthenticated callers cannot make the service parse
		// bodies or learn the schema; then hold JSON bodies to one strict reading; then
		// validate them against the spec.
		paramErr := func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(s.log, w, r, paramError(err))
		}
		g.Use(s.authenticate(router, rules), s.strictJSON, validator, fastGetToken(func(w http.ResponseWriter, r *http.Request, p oapi.GetTokenParams) {
			s.serveGetToken(w, r, p, strictOpts.ResponseErrorHandlerFunc)
		}, paramErr))
		oapiserver.HandlerWithOptions(strict, oapiserver.ChiServerOptions{BaseRouter: g, ErrorHandlerFunc: paramErr})
	})
	return r, nil
}

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An import streams; it bounds each line itself (import.go).
		if r.Body != nil && r.Body != http.NoBody && !streamsBody(r) {
			limit := int64(MaxBodyBytes)
			if r.URL.Path == certificatePath {
				limit = MaxCertificateBodyBytes
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
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

// paramError names the parameter the generated router could not bind, never its value
// (the binder's own messages quote it).
func paramError(err error) error {
	var name string
	if e, ok := errors.AsType[*oapiserver.InvalidParamFormatError](err); ok {
		name = e.ParamName
	} else if e, ok := errors.AsType[*oapiserver.RequiredParamError](err); ok {
		name = e.ParamName
	} else if e, ok := errors.AsType[*oapiserver.TooManyValuesForParamError](err); ok {
		name = e.ParamName
	}
	if name == "" {
		return domain.Public(errBadRequest, "a parameter does not match the API specification")
	}
	return domain.Public(errBadRequest, "parameter %q does not match the API specification", name)
}
