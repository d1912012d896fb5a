package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
)

// TestGetTokenParamsMatchSpec: fastGetToken binds exactly the spec's GET /token
// parameters, in the spec's order (the first bad one is the one reported), with the
// binder type the spec's schema gives.
func TestGetTokenParamsMatchSpec(t *testing.T) {
	spec, _ := mustSpecRouter(t)
	item := spec.Paths.Value(tokenPath)
	if item == nil || item.Get == nil || item.Get.OperationID != getTokenOp {
		t.Fatalf("spec: GET %s is not %s", tokenPath, getTokenOp)
	}
	var got []struct{ name, typ string }
	for _, p := range append(item.Parameters, item.Get.Parameters...) {
		v := p.Value
		if v.In != "query" || v.Required || v.Schema == nil || v.Schema.Value == nil || v.Schema.Value.Type == nil {
			t.Fatalf("spec: parameter %s: want an optional query parameter with a typed schema", v.Name)
		}
		got = append(got, struct{ name, typ string }{v.Name, v.Schema.Value.Type.Slice()[0]})
	}
	if !reflect.DeepEqual(got, getTokenParams) {
		t.Fatalf("spec parameters %v, fastGetToken binds %v", got, getTokenParams)
	}
}

// paramsCapture is a ServerInterface that only records GetToken's parameters.
type paramsCapture struct {
	oapiserver.Unimplemented
	params *oapi.GetTokenParams
	served *string // when set, GetToken sets it to "strict"
}

func (c paramsCapture) GetToken(_ http.ResponseWriter, _ *http.Request, p oapi.GetTokenParams) {
	*c.params = p
	if c.served != nil {
		*c.served = "strict"
	}
}

// checkBindLikeGenerated fails unless getTokenParamsOf binds rawQuery as the generated
// wrapper does: the same parameters, or the same error.
func checkBindLikeGenerated(t *testing.T, rawQuery string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, tokenPath, nil)
	r.URL.RawQuery = rawQuery
	var (
		want    oapi.GetTokenParams
		wantErr error
	)
	siw := oapiserver.ServerInterfaceWrapper{
		Handler:          paramsCapture{params: &want},
		ErrorHandlerFunc: func(_ http.ResponseWriter, _ *http.Request, err error) { wantErr = err },
	}
	siw.GetToken(httptest.NewRecorder(), r)
	got, err := getTokenParamsOf(r)
	if (err == nil) != (wantErr == nil) || err != nil && (reflect.TypeOf(err) != reflect.TypeOf(wantErr) || err.Error() != wantErr.Error()) {
		t.Fatalf("query %q: error %v, generated wrapper's %v", rawQuery, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("query %q: params %+v, generated wrapper's %+v", rawQuery, got, want)
	}
}

var getTokenQueries = []string{
	"", "ttl=60", "ttl=x", "ttl=", "ttl=1&ttl=2", "device=d1&module=m1&ttl=3600&transport=websocket",
	"transport=tcp", "transport=", "module=a%20b", "device=%zz", "x=1", "ttl=9999999999999999999999",
	"device=a&device=b", "module=", "ttl=-1", "ttl=1.5", "&&", ";", "device",
}

func TestBindGetTokenParamsLikeGenerated(t *testing.T) {
	for _, q := range getTokenQueries {
		checkBindLikeGenerated(t, q)
	}
}

// FuzzBindGetTokenParamsLikeGenerated holds fastGetToken's binding to the generated
// wrapper's on any query.
func FuzzBindGetTokenParamsLikeGenerated(f *testing.F) {
	for _, q := range getTokenQueries {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) { checkBindLikeGenerated(t, q) })
}

// TestFastGetTokenServesOnlyGetToken: GET /token (with or without a query) is served
// by fastGetToken, a bad parameter its error handler, and every other request the
// generated routes behind it.
func TestFastGetTokenServesOnlyGetToken(t *testing.T) {
	_, router := mustSpecRouter(t)
	tests := []struct {
		method, target string
		want           string
	}{
		{http.MethodGet, "/token", "strict"},
		{http.MethodGet, "/token?ttl=60&transport=websocket", "strict"},
		{http.MethodGet, "/token?ttl=soon", "param error"},
		{http.MethodPost, "/token/batch", "next"},
		{http.MethodPost, "/token/nonce", "next"},
		{http.MethodGet, "/devices", "next"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, nil)
			route, params, err := router.FindRoute(r)
			if err != nil {
				t.Fatal(err)
			}
			r = r.WithContext(context.WithValue(r.Context(), routedKey, &routed{route: route, params: params}))
			var got string
			var bound oapi.GetTokenParams
			h := fastGetToken(paramsCapture{params: &bound, served: &got}.GetToken,
				func(http.ResponseWriter, *http.Request, error) { got = "param error" })
			h(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got = "next" })).ServeHTTP(httptest.NewRecorder(), r)
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
