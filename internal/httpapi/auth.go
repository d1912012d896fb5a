package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/routers"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
)

// Authentication and authorisation: every request is routed once, then held to the
// security requirement of the operation it routes to before anything else looks at it.

type ctxKey int

const routedKey ctxKey = 0

// routed is what authentication learnt about a request, for the middleware and handler
// after it: the spec operation it routes to, its path parameters and, for device
// operations, the device that proved itself.
type routed struct {
	route  *routers.Route
	params map[string]string
	device domain.Device
	// accept is the Accept header, for handlers that negotiate content.
	accept string
}

// routedOf returns the request's routing; authenticate sets it before anything else
// behind it runs.
func routedOf(ctx context.Context) *routed {
	rt, _ := ctx.Value(routedKey).(*routed)
	return rt
}

// authenticate enforces the security requirement of the operation a request routes to,
// before anything else looks at it. Requests that route nowhere get their 404 or 405
// here. The service-wide rate limit applies before authentication (it protects the
// verifier too); a device's own limit after it.
func (s *Server) authenticate(router routers.Router, rules map[string]opRule) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			route, params, err := router.FindRoute(r)
			if err != nil {
				// Answer 404/405 here rather than pass the request on: nothing behind this
				// point may ever see a request that was not authenticated for its route.
				writeError(s.log, w, r, validationError(err))
				return
			}
			rt := setRouted(&r, routed{route: route, params: params, accept: r.Header.Get("Accept")})
			op := route.Operation.OperationID
			rule, known := rules[op]
			if !known {
				// Fail closed: an operation without a rule is never served.
				writeError(s.log, w, r, fmt.Errorf("operation %s has no security entry", op))
				return
			}
			if rule.globallyLimited {
				if err := s.deps.Limits.Global(); err != nil {
					s.refuse(w, r, err)
					return
				}
			}
			switch rule.scheme {
			case schemeAdmin:
				s.serveOperator(next, w, r, op, rule)
			case schemeDevice:
				s.serveDevice(next, w, r, rt)
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

// serveOperator authenticates the operator, checks their role allows op, and serves
// the request with its audit record.
func (s *Server) serveOperator(next http.Handler, w http.ResponseWriter, r *http.Request, op string, rule opRule) {
	params := routedOf(r.Context()).params
	p, err := s.deps.Operators.Authenticate(r)
	if err != nil {
		writeError(s.log, w, r, fmt.Errorf("%w: %w", errOperatorAuth, err))
		return
	}
	if err := operatorauth.Allow(p.Role, r.Method, rule.adminOnly); err != nil {
		s.auditDenied(r, op, params, p)
		writeError(s.log, w, r, fmt.Errorf("%w: %s (role %q) calling %s", err, p.Subject, p.Role, op))
		return
	}
	s.auditOperator(next, op, params, p).ServeHTTP(w, r)
}

// serveDevice authenticates the device and takes from its own bucket, keyed by the
// device the assertion or client certificate proved, so no caller can spend another
// device's budget.
func (s *Server) serveDevice(next http.Handler, w http.ResponseWriter, r *http.Request, rt *routed) {
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

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
