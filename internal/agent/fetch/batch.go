package fetch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// MaxBatch is the most children POST /token/batch takes in one call.
const MaxBatch = 500

// BatchResult is one child's outcome of a Batch call: its token, or Err (an *Error of
// class ErrRefused carrying the child's problem).
type BatchResult struct {
	DeviceID string
	Token    token.Token
	Err      error
}

// Batch asks POST /token/batch for the tokens of the gateway's children ids (at most
// MaxBatch), authenticated as the client's device like Fetch. The results are in
// request order. A failure of the whole call is an *Error like Fetch's; one child's
// refusal is that child's Err only. Each token's Key is BatchKey of the child.
// A time-based assertion refused because the device clock is off is retried once, with
// the clock corrected from the service's Date header.
func (c *Client) Batch(ctx context.Context, ids []string) ([]BatchResult, error) {
	if len(ids) == 0 || len(ids) > MaxBatch {
		return nil, &Error{Class: ErrRefused, Detail: fmt.Sprintf("a batch takes 1 to %d devices, not %d", MaxBatch, len(ids))}
	}
	out, retry, err := c.batchOnce(ctx, ids)
	if retry {
		out, _, err = c.batchOnce(ctx, ids)
	}
	return out, err
}

// batchOnce makes one POST /token/batch; retry is true when a time-based assertion was
// refused and the service's clock differs from the corrected device clock.
func (c *Client) batchOnce(ctx context.Context, ids []string) (out []BatchResult, retry bool, err error) {
	offset := c.Offset()
	assertion, usedNonce, err := c.assertion(ctx, c.useNonce(), offset)
	if err != nil {
		return nil, false, err
	}
	params := oapi.GetTokenBatchParams{Ttl: c.params.Ttl}
	if c.params.Transport != nil {
		t := oapi.GetTokenBatchParamsTransport(*c.params.Transport)
		params.Transport = &t
	}
	sent := c.opts.Now()
	resp, err := c.api.GetTokenBatchWithResponse(ctx, &params, oapi.TokenBatchRequest{Devices: ids},
		func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+assertion)
			return nil
		})
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, &Error{Class: ErrUnavailable, Detail: err.Error()}
	}
	status := resp.StatusCode()
	if status != http.StatusOK || resp.JSON200 == nil {
		e := &Error{Class: ErrRefused, Status: status, Detail: firstProblem(status, resp.ApplicationproblemJSON400,
			resp.ApplicationproblemJSON401, resp.ApplicationproblemJSON403, resp.ApplicationproblemJSON413,
			resp.ApplicationproblemJSON429, resp.ApplicationproblemJSON503)}
		switch {
		case status == http.StatusTooManyRequests || status >= 500 || status == http.StatusOK:
			e.Class = ErrUnavailable
			e.RetryAfter = retryAfter(resp.HTTPResponse.Header.Get("Retry-After"), sent)
		case status == http.StatusUnauthorized && !usedNonce:
			return nil, c.correctClock(resp.HTTPResponse.Header, sent, offset), e
		}
		return nil, false, e
	}
	results := resp.JSON200.Results
	if len(results) != len(ids) {
		return nil, false, &Error{Class: ErrUnavailable, Status: status, Detail: "batch answer does not match the request"}
	}
	out = make([]BatchResult, len(ids))
	for i, r := range results {
		out[i] = c.batchResult(ids[i], r, sent)
	}
	if len(out) > 0 && out[0].Err == nil {
		c.learnOffset(out[0].Token.Response.ServerTime.Sub(sent), "serverTime")
	}
	return out, false, nil
}

// BatchKey is the Key of a child's token from Batch.
func (c *Client) BatchKey(child string) string { return c.key + "\x00child\x00" + child }

func (c *Client) batchResult(id string, r oapi.TokenBatchResult, sent time.Time) BatchResult {
	res := BatchResult{DeviceID: id}
	switch {
	case r.DeviceId != id:
		res.Err = &Error{Class: ErrUnavailable, Detail: "batch answer out of order"}
	case r.Error != nil:
		res.Err = &Error{Class: ErrRefused, Status: r.Error.Status, Detail: firstProblem(r.Error.Status, r.Error)}
	case r.Token == nil || r.ExpiresAt == nil || r.ServerTime == nil || r.RefreshAfter == nil ||
		!r.ExpiresAt.After(*r.ServerTime) || r.RefreshAfter.Before(*r.ServerTime) || r.RefreshAfter.After(*r.ExpiresAt):
		res.Err = &Error{Class: ErrUnavailable, Detail: "batch entry lacks a usable token or times"}
	default:
		// The entry is a TokenResponse plus deviceId: decode it as one.
		b, err := json.Marshal(r)
		var tr oapi.TokenResponse
		if err == nil {
			err = json.Unmarshal(b, &tr)
		}
		if err != nil {
			res.Err = &Error{Class: ErrUnavailable, Detail: "batch entry: " + err.Error()}
			break
		}
		res.Token = token.Token{Response: tr, RequestedAt: sent, Key: c.BatchKey(id)}
	}
	return res
}

// firstProblem is the detail (or title) of the first problem present, else the status
// text.
func firstProblem(status int, ps ...*oapi.Problem) string {
	for _, p := range ps {
		if p != nil {
			if p.Detail != nil {
				return *p.Detail
			}
			return p.Title
		}
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return strings.TrimSpace(fmt.Sprint(status))
}
