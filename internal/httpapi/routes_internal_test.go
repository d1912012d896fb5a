package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// TestStaticRoutesAnswerAsTheRouter: for every request the table answers, the router
// answers the same operation, path and method; the rest (parameters, other methods,
// near misses) reach the router.
func TestStaticRoutesAnswerAsTheRouter(t *testing.T) {
	spec, mux := mustSpecRouter(t)
	static, err := newStaticRoutes(spec, mux)
	if err != nil {
		t.Fatal(err)
	}
	if static.byPath["/token"][http.MethodGet] == nil {
		t.Fatal("GET /token is not in the table")
	}
	targets := []string{"/token", "/token/", "/Token", "/token?ttl=5", "/t%6Fken", "/devices", "/devices/dev-1", "/hubs", "/nowhere", "//token"}
	for path := range static.byPath {
		targets = append(targets, path)
	}
	for _, target := range targets {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, "get"} {
			req := httptest.NewRequest(method, target, nil)
			got, gotParams, gotErr := static.FindRoute(req)
			want, wantParams, wantErr := mux.FindRoute(req)
			if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
				t.Errorf("%s %s: error got %v, want %v", method, target, gotErr, wantErr)
				continue
			}
			if gotErr != nil {
				continue
			}
			if got.Operation != want.Operation || got.Path != want.Path || got.Method != want.Method || len(gotParams) != len(wantParams) {
				t.Errorf("%s %s: got %s %s (%v), want %s %s (%v)", method, target, got.Method, got.Path, gotParams, want.Method, want.Path, wantParams)
			}
		}
	}
}

// mustSpecRouter is the spec and the router New builds from it (servers cleared).
func mustSpecRouter(tb testing.TB) (*openapi3.T, routers.Router) {
	tb.Helper()
	spec, err := loadSpec()
	if err != nil {
		tb.Fatal(err)
	}
	spec.Servers = nil
	mux, err := gorillamux.NewRouter(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return spec, mux
}
