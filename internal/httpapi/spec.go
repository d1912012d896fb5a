package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/tokensvc/tokensvc/api"
	"github.com/tokensvc/tokensvc/internal/domain"
)

// What the spec says about each operation, read once at start so the spec stays the one
// place that says it; and validation of requests against it.

// opRule is what the spec says about one operation.
type opRule struct {
	// scheme is the security scheme guarding it (schemeAdmin or schemeDevice), or ""
	// for an operation the spec leaves public with `security: []`.
	scheme string
	// globallyLimited: it documents 429, so the service-wide bucket guards it.
	globallyLimited bool
	// adminOnly: it is tagged "admin" (admin-token management); only the admin role
	// may call it.
	adminOnly bool
	// trivial: without a query string its requests hold nothing the spec could reject
	// (no body, no path, header or cookie parameter, no required one). GET /token is
	// one; skipping the validator there changes no outcome and saves a good part of
	// the request's cost.
	trivial bool
}

// specRules reads every operation's rules in one walk. An operation's own security,
// else the document's, decides its scheme; an operation with none is an error, so a new
// operation is never served unguarded by accident.
func specRules(spec *openapi3.T) (map[string]opRule, error) {
	out := make(map[string]opRule)
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			scheme, err := securityOf(spec, op)
			if err != nil {
				return nil, err
			}
			rule := opRule{
				scheme:          scheme,
				globallyLimited: op.Responses != nil && op.Responses.Value("429") != nil,
				adminOnly:       slices.Contains(op.Tags, "admin"),
				trivial:         op.RequestBody == nil,
			}
			for _, p := range slices.Concat(item.Parameters, op.Parameters) {
				if p.Value == nil || p.Value.In != openapi3.ParameterInQuery || p.Value.Required {
					rule.trivial = false
				}
			}
			out[op.OperationID] = rule
		}
	}
	return out, nil
}

func securityOf(spec *openapi3.T, op *openapi3.Operation) (string, error) {
	reqs := spec.Security
	if op.Security != nil {
		reqs = *op.Security
	}
	switch {
	case reqs == nil:
		return "", fmt.Errorf("operation %s: no security requirement; write security: [] to make it public", op.OperationID)
	case len(reqs) == 0:
		return "", nil
	case len(reqs) == 1 && len(reqs[0]) == 1:
		for name := range reqs[0] {
			if name != schemeAdmin && name != schemeDevice {
				return "", fmt.Errorf("operation %s: unknown security scheme %q", op.OperationID, name)
			}
			return name, nil
		}
	}
	return "", fmt.Errorf("operation %s: want exactly one security scheme", op.OperationID)
}

func loadSpec() (*openapi3.T, error) {
	spec, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("load api spec: %w", err)
	}
	return spec, nil
}

// validate holds requests to the spec (parameters, bodies) with the route authenticate
// found, so each request is routed once. An import streams and validates each line
// against DeviceCreate itself (import.go): the spec validator would read the whole body.
func (s *Server) validate(opts openapi3filter.Options, rules map[string]opRule) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rt := routedOf(r.Context())
			if streamsBody(r) || (r.URL.RawQuery == "" && rules[rt.route.Operation.OperationID].trivial) {
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

// validationError turns a spec violation into a client message that names the field and
// the rule. A body's values are never echoed; a query or path parameter that does not
// parse as its type is (kin-openapi's "value abc: an invalid integer"), which is
// harmless because the spec has no header or cookie parameters and no query or path
// parameter carries a secret.
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
