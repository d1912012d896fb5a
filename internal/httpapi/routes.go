package httpapi

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
)

// staticRoutes answers FindRoute for the spec's paths without parameters (GET /token
// above all) from a table built at start, with what the router itself answered for
// them then; every other request (and any path with escapes) goes to the router. The router (gorillamux) matches
// every route's regular expression in turn and allocates the route and its variables
// per request, a good part of a GET /token's cost. Its answer depends on the method and
// the path only (the spec's servers are cleared, so no host or scheme matching), so the
// table's answers are the router's. The routes handed out are shared: read-only, as the
// validator and the handlers treat them.
type staticRoutes struct {
	next   routers.Router
	byPath map[string]map[string]*routers.Route
}

func newStaticRoutes(spec *openapi3.T, next routers.Router) (*staticRoutes, error) {
	s := &staticRoutes{next: next, byPath: make(map[string]map[string]*routers.Route)}
	for path, item := range spec.Paths.Map() {
		if strings.Contains(path, "{") {
			continue
		}
		for method := range item.Operations() {
			req, err := http.NewRequest(method, path, nil)
			if err != nil {
				return nil, fmt.Errorf("static route %s %s: %w", method, path, err)
			}
			route, params, err := next.FindRoute(req)
			if err != nil || len(params) > 0 {
				continue // left to the router
			}
			if s.byPath[path] == nil {
				s.byPath[path] = make(map[string]*routers.Route)
			}
			s.byPath[path][method] = route
		}
	}
	return s, nil
}

// FindRoute implements routers.Router.
func (s *staticRoutes) FindRoute(r *http.Request) (*routers.Route, map[string]string, error) {
	// A path with escapes the router matches in its escaped form: left to it.
	if r.URL.RawPath == "" {
		if route := s.byPath[r.URL.Path][r.Method]; route != nil {
			return route, nil, nil
		}
	}
	return s.next.FindRoute(r)
}

var _ routers.Router = (*staticRoutes)(nil)
