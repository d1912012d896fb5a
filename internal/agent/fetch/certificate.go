package fetch

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Certificate sends csrPEM (a PEM PKCS#10 request for the device's own key) to POST
// /token/certificate, authenticated exactly as Fetch authenticates GET /token (a fresh
// assertion, a nonce while the clock is unknown, one retry after a refusal caused by a
// wrong clock), with the client's module and TTL. It returns the answer and the local
// time its request was sent. Failures are *Error values of class ErrUnavailable or
// ErrRefused, as Fetch's.
func (c *Client) Certificate(ctx context.Context, csrPEM string) (r oapi.CertificateResponse, sent time.Time, err error) {
	body := oapi.CertificateRequest{Csr: csrPEM, Module: c.params.Module, Ttl: c.params.Ttl}
	err = c.authorized(func(withNonce bool) (retry bool, e error) {
		sent, retry, e = c.exchange(ctx, withNonce, func(ctx context.Context, auth oapi.RequestEditorFn) (answer, error) {
			resp, err := c.api.GetCertificateWithResponse(ctx, body, auth)
			if err != nil {
				return answer{}, err
			}
			var at *time.Time
			if j := resp.JSON200; j != nil {
				r, at = *j, &j.ServerTime
			}
			usable := r.Certificate != "" && usableTimes(r.ServerTime, r.RefreshAfter, r.ExpiresAt)
			return newAnswer(resp.HTTPResponse, at, usable, "response lacks a certificate or usable times",
				func() string { return bodyProblem(resp.StatusCode(), resp.Body) }), nil
		})
		return retry, e
	})
	return r, sent, err
}

// CertificateKey identifies what Certificate asks for, as Key does for Fetch.
func (c *Client) CertificateKey() string { return c.key + "\x00certificate" }

// bodyProblem is the detail (or title) of the problem+json body, else the status text.
func bodyProblem(status int, body []byte) string {
	var p oapi.Problem
	if json.Unmarshal(body, &p) != nil || p.Title == "" {
		return http.StatusText(status)
	}
	if p.Detail != nil {
		return *p.Detail
	}
	return p.Title
}
