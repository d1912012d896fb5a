package fetch

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"
)

// NonceMode says when a Client authenticates with a nonce from POST /token/nonce
// instead of an assertion that depends on the device clock.
type NonceMode string

// Nonce modes.
const (
	// NonceAuto (the default) uses a nonce when the device clock is unknown — before
	// ClockFloor even after the correction learned from the service — or wrong: a
	// time-based assertion was refused with 401 while the service's Date header differs
	// from the corrected device clock by more than the allowed skew.
	NonceAuto NonceMode = "auto"
	// NonceAlways uses a nonce for every fetch (two requests instead of one).
	NonceAlways NonceMode = "always"
	// NonceNever never does; a wrong clock is only corrected from the Date header.
	NonceNever NonceMode = "never"
)

// floor2024 is the earliest time a device clock can show and be right: no tokenagent
// ran before it.
var floor2024 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultClockFloor is the later of 2024-01-01 and the time of the commit the binary was
// built from: a clock showing an earlier time has not been set.
func DefaultClockFloor() time.Time {
	floor := floor2024
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key != "vcs.time" {
				continue
			}
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil && t.After(floor) {
				floor = t
			}
		}
	}
	return floor
}

// useNonce reports whether the next fetch starts with a nonce.
func (c *Client) useNonce() bool {
	switch c.opts.Nonce {
	case NonceAlways:
		return true
	case NonceNever:
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	unknown := c.opts.Now().Add(c.offset).Before(c.opts.ClockFloor)
	if unknown && !c.loggedUnknown {
		c.log.Warn("device clock is not set; authenticating with a nonce from the token service",
			"clockFloor", c.opts.ClockFloor.Format(time.RFC3339))
	}
	c.loggedUnknown = unknown
	return unknown
}

// nonce asks the service for a single-use nonce and learns the clock offset from its
// serverTime. Failures are *Error values like Fetch's.
func (c *Client) nonce(ctx context.Context) (string, error) {
	sent := c.opts.Now()
	resp, err := c.api.CreateNonceWithResponse(ctx, func(_ context.Context, r *http.Request) error {
		r.Header.Set("Accept", "application/json")
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", &Error{Class: ErrUnavailable, Detail: err.Error()}
	}
	status := resp.StatusCode()
	if n := resp.JSON200; status == http.StatusOK && n != nil && n.Nonce != "" {
		c.learnOffset(n.ServerTime.Sub(sent), "nonce serverTime")
		return n.Nonce, nil
	}
	e := &Error{Class: ErrRefused, Status: status, Detail: fmt.Sprintf("nonce: %s", http.StatusText(status))}
	if status == http.StatusOK {
		e.Class, e.Detail = ErrUnavailable, "nonce: response holds no nonce"
	}
	if status == http.StatusTooManyRequests || status >= 500 {
		e.Class = ErrUnavailable
		e.RetryAfter = retryAfter(resp.HTTPResponse.Header.Get("Retry-After"), sent)
	}
	return "", e
}

// offersNonce reports whether the service offers nonces, as far as is known.
func (c *Client) offersNonce() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.nonceUnsupported
}

// nonceMissing reports whether err says the service has no POST /token/nonce (a
// tokensvc older than the nonce flow) and the mode lets the Client fall back: in
// NonceAuto it then stays with time-based assertions; NonceAlways never falls back, so
// the operator's choice holds and the failure is reported.
func (c *Client) nonceMissing(err *Error) bool {
	if c.opts.Nonce != NonceAuto || (err.Status != http.StatusNotFound && err.Status != http.StatusMethodNotAllowed) {
		return false
	}
	c.mu.Lock()
	c.nonceUnsupported = true
	c.mu.Unlock()
	c.log.Warn("the token service offers no nonce; using time-based assertions", "status", err.Status)
	return true
}
