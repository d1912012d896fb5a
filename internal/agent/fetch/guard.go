package fetch

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// MaxResponseBytes bounds the body of any answer the Client reads: a batch of MaxBatch
// tokens with all their profiles is a few MiB; a service (or whatever answers at the
// configured URL) sending more would otherwise be read into memory whole.
const MaxResponseBytes = 16 << 20

// guarded returns a copy of hc whose responses fail to read past MaxResponseBytes,
// that follows no redirect from https to http (net/http would send the assertion
// along to the same host, in clear text, where anyone on the path could use it within
// its lifetime) and, when its transport is an *http.Transport, that checks the
// service's certificate as of now() rather than the system clock.
func guarded(hc *http.Client, now func() time.Time) *http.Client {
	out := *hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	if tr, ok := base.(*http.Transport); ok {
		tr = tr.Clone()
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.Time = now
		base = tr
	}
	out.Transport = limitedTransport{base}
	next := hc.CheckRedirect
	out.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if via[0].URL.Scheme == "https" && r.URL.Scheme != "https" {
			return errDowngrade
		}
		if next != nil {
			return next(r, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &out
}

var errDowngrade = errors.New("redirect from https to http refused: it would send the assertion in clear text")

type limitedTransport struct{ base http.RoundTripper }

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil && resp.Body != nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: MaxResponseBytes}
	}
	return resp, err
}

// limitedBody fails once more than left bytes would be read.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, errTooLarge
	}
	return n, err
}

var errTooLarge = fmt.Errorf("response larger than %d bytes", MaxResponseBytes)

// VerifyTime is the time the service's certificate is checked at (and, passed as
// link.Common.VerifyTime, the brokers'): the device clock corrected by the service's,
// but never before ClockFloor — a board without an RTC boots at 1970 or 2000, when no
// certificate is valid yet, and learns the service's time only from its first answer.
func (c *Client) VerifyTime() time.Time {
	return maxTime(c.opts.Now().Add(c.Offset()), c.opts.ClockFloor)
}

func maxTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}
