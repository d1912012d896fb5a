package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5/middleware"
)

// idOf runs mw on a request with header X-Request-Id = sent and returns the request ID
// the handler behind it reads.
func idOf(mw func(http.Handler) http.Handler, sent string) string {
	var id string
	r := httptest.NewRequest(http.MethodGet, "/token", nil)
	if sent != "" {
		r.Header.Set(middleware.RequestIDHeader, sent)
	}
	mw(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		id = middleware.GetReqID(r.Context())
	})).ServeHTTP(httptest.NewRecorder(), r)
	return id
}

// TestRequestIDReadsAsChis: requestID hands out the IDs chi's middleware.RequestID
// would (its prefix, its counter, %06d), keeps a caller's X-Request-Id, and
// middleware.GetReqID reads them.
func TestRequestIDReadsAsChis(t *testing.T) {
	chiID, ours := idOf(middleware.RequestID, ""), idOf(requestID, "")
	cut := func(id string) (string, uint64) {
		i := strings.LastIndexByte(id, '-')
		n, err := strconv.ParseUint(id[i+1:], 10, 64)
		if err != nil || len(id)-i-1 < 6 {
			t.Fatalf("id %q: want <prefix>-<at least 6 digits>", id)
		}
		return id[:i], n
	}
	chiPrefix, chiN := cut(chiID)
	prefix, n := cut(ours)
	if prefix != chiPrefix || n != chiN+1 || ours != fmt.Sprintf("%s-%06d", chiPrefix, chiN+1) {
		t.Fatalf("got %q, want chi's next: %s-%06d", ours, chiPrefix, chiN+1)
	}
	for _, sent := range []string{"caller-1", "x"} {
		if got, want := idOf(requestID, sent), idOf(middleware.RequestID, sent); got != want {
			t.Fatalf("X-Request-Id %q: got %q, chi's %q", sent, got, want)
		}
	}
}

// TestRoutedInRequestCtx: routedOf sees nothing before authenticate routes, then the
// routing setRouted kept, through context values added after it; a request without a
// requestCtx keeps it in a context value.
func TestRoutedInRequestCtx(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/token", nil)
	r = r.WithContext(&requestCtx{Context: r.Context(), id: "id-1"})
	if rt := routedOf(r.Context()); rt != nil {
		t.Fatalf("before routing: got %+v, want nil", rt)
	}
	kept := setRouted(&r, routed{accept: "text/plain"})
	type other struct{}
	ctx := context.WithValue(r.Context(), other{}, 1)
	if got := routedOf(ctx); got != kept || got.accept != "text/plain" {
		t.Fatalf("got %p %+v, want %p", got, got, kept)
	}
	if got := middleware.GetReqID(ctx); got != "id-1" {
		t.Fatalf("request ID: got %q, want id-1", got)
	}
	if ctx.Value(other{}) != 1 || ctx.Value("absent") != nil {
		t.Fatal("other context values lost")
	}

	bare := httptest.NewRequest(http.MethodGet, "/token", nil)
	kept = setRouted(&bare, routed{accept: "a"})
	if got := routedOf(bare.Context()); got != kept || got.accept != "a" {
		t.Fatalf("without requestCtx: got %+v, want %+v", got, kept)
	}
}
