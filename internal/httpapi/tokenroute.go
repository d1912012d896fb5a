package httpapi

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/oapi-codegen/runtime"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
)

// GET /token's path and operation ID in api/openapi.yaml.
const (
	tokenPath  = "/token"
	getTokenOp = "getToken"
)

// getTokenParams are GET /token's query parameters, as the generated wrapper binds them
// (name, binder type); a test holds the list to the spec and the binding to the
// generated wrapper's.
var getTokenParams = []struct{ name, typ string }{
	{"device", "string"}, {"module", "string"}, {"ttl", "integer"}, {"transport", "string"},
}

// fastGetToken serves GET /token, the hot path, past the generated wrapper, which
// parses the query once per parameter: here the query is parsed once (not at all when
// there is none) and bound by the same runtime calls, errors included, then handed to
// serve (Server.serveGetToken). Every other request goes on to the generated routes.
func fastGetToken(serve func(http.ResponseWriter, *http.Request, oapi.GetTokenParams), paramErr func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rt := routedOf(r.Context())
			if rt == nil || rt.route.Operation.OperationID != getTokenOp || r.URL.Path != tokenPath || r.URL.RawPath != "" {
				next.ServeHTTP(w, r)
				return
			}
			params, err := getTokenParamsOf(r)
			if err != nil {
				paramErr(w, r, err)
				return
			}
			serve(w, r, params)
		})
	}
}

// serveGetToken does what the generated strict handler does for GET /token when it has
// no strict middleware (New gives it none), without boxing the request object or
// building the middleware chain per request.
func (s *Server) serveGetToken(w http.ResponseWriter, r *http.Request, params oapi.GetTokenParams, respErr func(http.ResponseWriter, *http.Request, error)) {
	resp, err := s.GetToken(r.Context(), oapiserver.GetTokenRequestObject{Params: params})
	switch {
	case err != nil:
		respErr(w, r, err)
	case resp != nil:
		if err := resp.VisitGetTokenResponse(w); err != nil {
			respErr(w, r, err)
		}
	}
}

// getTokenParamsOf binds r's query; a request without one has no parameters.
func getTokenParamsOf(r *http.Request) (oapi.GetTokenParams, error) {
	if r.URL.RawQuery == "" {
		return oapi.GetTokenParams{}, nil
	}
	return bindGetTokenParams(r.URL.Query())
}

// bindGetTokenParams binds q as the generated ServerInterfaceWrapper.GetToken does.
func bindGetTokenParams(q url.Values) (oapi.GetTokenParams, error) {
	var p oapi.GetTokenParams
	dst := []any{&p.Device, &p.Module, &p.Ttl, &p.Transport}
	for i, param := range getTokenParams {
		err := runtime.BindQueryParameterWithOptions("form", true, false, param.name, q, dst[i], runtime.BindQueryParameterOptions{Type: param.typ})
		if err == nil {
			continue
		}
		if _, ok := errors.AsType[*runtime.RequiredParameterError](err); ok {
			return p, &oapiserver.RequiredParamError{ParamName: param.name}
		}
		return p, &oapiserver.InvalidParamFormatError{ParamName: param.name, Err: err}
	}
	return p, nil
}
