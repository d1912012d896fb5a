package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/tokensvc/tokensvc/internal/stack"
)

// requestCtx is the request-scoped state the middleware learn, in one allocation
// instead of a context value (and a request copy) each: the request ID and, once
// authenticate has routed the request, its routing. It answers middleware.GetReqID and
// routedOf as the context values it replaces did.
type requestCtx struct {
	context.Context
	id        string
	routed    routed
	hasRouted bool
}

// stateKey finds a request's requestCtx.
const stateKey ctxKey = -1

// Value implements context.Context.
func (c *requestCtx) Value(key any) any {
	switch key {
	case middleware.RequestIDKey:
		return c.id
	case stateKey:
		return c
	case routedKey:
		if c.hasRouted {
			return &c.routed
		}
	}
	return c.Context.Value(key)
}

// requestID is chi's middleware.RequestID in one allocation less, as part of the
// request's requestCtx: the caller's X-Request-Id if it sent one, else
// "<chi's process prefix>-<chi's next request number, at least six digits>", so IDs
// read as before.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(middleware.RequestIDHeader)
		if id == "" {
			id = nextRequestID()
		}
		stack.Grow() // the outermost middleware: as few frames as possible below it
		next.ServeHTTP(w, r.WithContext(&requestCtx{Context: r.Context(), id: id}))
	})
}

// requestIDPrefix is the prefix chi's middleware.RequestID gives this process's IDs
// (host name and a random part, both chi's), read from one ID of its own.
var requestIDPrefix = func() string {
	var id string
	middleware.RequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		id = middleware.GetReqID(r.Context())
	})).ServeHTTP(nil, &http.Request{Header: http.Header{}})
	return id[:strings.LastIndexByte(id, '-')]
}()

func nextRequestID() string {
	var buf [128]byte
	b := append(buf[:0], requestIDPrefix...)
	b = append(b, '-')
	var digits [20]byte
	n := strconv.AppendUint(digits[:0], middleware.NextRequestID(), 10)
	for range 6 - len(n) {
		b = append(b, '0')
	}
	return string(append(b, n...))
}

// setRouted records rt as r's routing and returns where it is kept: in r's requestCtx,
// or (a request not through requestID) in a new context value of *r.
func setRouted(r **http.Request, rt routed) *routed {
	if c, ok := (*r).Context().Value(stateKey).(*requestCtx); ok {
		c.routed, c.hasRouted = rt, true
		return &c.routed
	}
	p := new(routed) // not &rt: that would move rt to the heap on the common path too
	*p = rt
	*r = (*r).WithContext(context.WithValue((*r).Context(), routedKey, p))
	return p
}
