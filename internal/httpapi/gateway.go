package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// Field gateways obtain their children's tokens: GET /token?device= and POST
// /token/batch. The relation is re-checked on every request against the records the
// store returns — with Vault behind the key cache (cachestore), a change made through
// another replica is seen within the cache TTL, as disabling a device is.

var (
	// errNotChild is the one refusal for every device a gateway may not have tokens
	// for — whether or not the device exists, so a gateway cannot probe the registry.
	errNotChild = errors.New("not the caller's child")
	// errNotGateway refuses a batch from a device that is not a gateway.
	errNotGateway = errors.New("not a gateway")
)

// batchWorkers bounds how many children of one batch are minted at once.
const batchWorkers = 8

// childFor returns the device gw may obtain a token for under id, having taken from
// the child's rate-limit bucket (the gateway's was taken when it authenticated). Any
// device that is not gw's enabled child is errNotChild, checked before the child's
// bucket is touched so no caller spends another device's budget; a store failure is
// returned as is.
func (s *Server) childFor(ctx context.Context, gw domain.Device, id string) (domain.Device, error) {
	if !gw.Gateway || !domain.ValidID(id) {
		return domain.Device{}, errNotChild
	}
	c, err := s.deps.Registry.GetDevice(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return domain.Device{}, errNotChild
	case err != nil:
		return domain.Device{}, err
	case !gw.MayObtainFor(&c):
		return domain.Device{}, errNotChild
	}
	if err := s.deps.Limits.Device(c.ID); err != nil {
		var le *limits.Error
		if errors.As(err, &le) {
			s.deps.Metrics.RateLimited(le.Limit)
		}
		return domain.Device{}, err
	}
	return c, nil
}

// issueChild mints the token of the child id for gateway gw, recording a refusal.
func (s *Server) issueChild(ctx context.Context, gw domain.Device, id string, tr tokens.Request) (tokens.Issued, error) {
	c, err := s.childFor(ctx, gw, id)
	if err != nil {
		s.issuer.refused(ctx, gw, id, tr.ModuleID, err)
		return tokens.Issued{}, err
	}
	return s.issuer.issueFor(ctx, gw.ID, c, tr)
}

// GetTokenBatch mints tokens for many of the calling gateway's children, one result
// per requested ID in request order; one child's failure is that entry's error.
func (s *Server) GetTokenBatch(ctx context.Context, req oapiserver.GetTokenBatchRequestObject) (oapiserver.GetTokenBatchResponseObject, error) {
	rt := routedOf(ctx)
	if rt == nil || rt.device.ID == "" {
		return nil, errors.New("GetTokenBatch reached without an authenticated device")
	}
	gw := rt.device
	if !gw.Gateway {
		s.issuer.refused(ctx, gw, "", "", errNotChild)
		return nil, domain.Public(errNotGateway, "device %q is not a gateway; only gateways may ask for tokens in a batch", gw.ID)
	}
	if req.Body == nil {
		return nil, domain.Public(errBadRequest, "a body is required")
	}
	tr := tokens.Request{
		TTL:       durationOf(req.Params.Ttl),
		Transport: signer.Transport(deref((*string)(req.Params.Transport))),
	}
	ids := req.Body.Devices
	out := batchJSON{results: make([]oapi.TokenBatchResult, len(ids))}
	var g errgroup.Group
	g.SetLimit(batchWorkers)
	for i, id := range ids {
		g.Go(func() error {
			// The request's recoverer does not cover this goroutine: a panic minting
			// one child is that entry's 500, not the process's end.
			defer func() {
				if p := recover(); p != nil {
					s.log.LogAttrs(ctx, slog.LevelError, "batch entry panicked", slog.String("device", id), slog.Any("panic", p))
					out.results[i] = problemEntry(id, http.StatusInternalServerError, "internal error")
				}
			}()
			out.results[i] = s.batchEntry(ctx, gw, id, tr)
			return nil
		})
	}
	_ = g.Wait() // entries carry their own errors
	return out, nil
}

// batchEntry is one child's result: its token response fields, or a problem.
func (s *Server) batchEntry(ctx context.Context, gw domain.Device, id string, tr tokens.Request) oapi.TokenBatchResult {
	issued, err := s.issueChild(ctx, gw, id, tr)
	if err != nil {
		status, detail := classify(err)
		if status >= 500 && !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.log.LogAttrs(ctx, slog.LevelError, "batch entry failed", slog.String("device", id), slog.String("gateway", gw.ID), slog.String("error", err.Error()))
		}
		var ra interface{ RetryAfter() int }
		if errors.As(err, &ra) {
			// No Retry-After header speaks for one entry: the delay goes in its words.
			what, _, _ := strings.Cut(detail, ";")
			detail = fmt.Sprintf("%s; retry after %d s", what, ra.RetryAfter())
		}
		return problemEntry(id, status, detail)
	}
	t := tokenToAPI(issued)
	return oapi.TokenBatchResult{
		DeviceId:         id,
		Token:            &t.Token,
		Resource:         &t.Resource,
		ExpiresAt:        &t.ExpiresAt,
		ExpiresIn:        &t.ExpiresIn,
		RefreshAfter:     &t.RefreshAfter,
		ServerTime:       &t.ServerTime,
		Hub:              &t.Hub,
		Kind:             &t.Kind,
		ConnectionString: t.ConnectionString,
		Mqtt:             t.Mqtt,
		Amqp:             t.Amqp,
		Https:            t.Https,
		Signature:        t.Signature,
	}
}

func problemEntry(id string, status int, detail string) oapi.TokenBatchResult {
	return oapi.TokenBatchResult{DeviceId: id, Error: &oapi.Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: &detail,
	}}
}

// batchJSON writes the batch response without HTML escaping, so the & and = of SAS
// tokens stay themselves, as in GET /token.
type batchJSON struct{ results []oapi.TokenBatchResult }

func (b batchJSON) VisitGetTokenBatchResponse(w http.ResponseWriter) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", noStore)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(oapi.TokenBatchResponse{Results: b.results})
}
