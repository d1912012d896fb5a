// Package fetch asks tokensvc for a token with the generated client: it signs a fresh
// assertion for every request — with a nonce from POST /token/nonce instead of times
// while the device clock is unknown or wrong — classifies failures for the retry policy
// (with the service's Retry-After) and keeps the device clock's offset from the
// service's clock, learned from serverTime and, when an assertion is refused, from the
// Date header.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Classes of failure, matched with errors.Is on the *Error Fetch returns.
var (
	// ErrUnavailable is a failure worth retrying soon: the service is unreachable or
	// answered 429 or 5xx.
	ErrUnavailable = errors.New("token service unavailable")
	// ErrRefused means the service refused the device (401, 403) or the request (4xx);
	// retrying only helps once an operator changes something.
	ErrRefused = errors.New("token service refused the request")
)

// Error is a failed fetch.
type Error struct {
	// Class is ErrUnavailable or ErrRefused.
	Class error
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// RetryAfter is the service's Retry-After, zero when absent.
	RetryAfter time.Duration
	// Detail is the problem's detail or the transport error; it holds no secret.
	Detail string
}

// Error says the class, the HTTP status when there was one, and the detail.
func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%v: %s", e.Class, e.Detail)
	}
	return fmt.Sprintf("%v: HTTP %d: %s", e.Class, e.Status, e.Detail)
}

// Unwrap returns the class (ErrRefused, ErrUnavailable, …) for errors.Is.
func (e *Error) Unwrap() error { return e.Class }

// Signer signs device assertions; *credential.Credential implements it.
type Signer interface {
	// Assertion signs an assertion issued at now (the service's time as best known).
	Assertion(deviceID, audience string, now time.Time) (string, error)
	// NonceAssertion signs an assertion that carries a service nonce instead of times.
	NonceAssertion(deviceID, audience, nonce string) (string, error)
}

// Options configure a Client.
type Options struct {
	// ServiceURL is tokensvc's base URL.
	ServiceURL string
	// HTTPClient carries TLS trust and timeouts; nil means a client with a 30 s timeout.
	// The Client checks the service's certificate as of Now corrected by the service's
	// time, never before ClockFloor (its TLS config's Time is replaced).
	HTTPClient *http.Client
	DeviceID   string
	Audience   string
	// Module, TTL and Transport are the GET /token query; zero values are omitted.
	Module    string
	TTL       time.Duration
	Transport string
	Signer    Signer
	// Nonce says when to authenticate with a nonce from POST /token/nonce; "" means
	// NonceAuto.
	Nonce NonceMode
	// ClockFloor is the earliest time a set device clock can show; zero means
	// DefaultClockFloor().
	ClockFloor time.Time
	// Now is the device clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// maxSkew is how far the device clock may be from the service's before an assertion
// refused with 401 is retried with the service's time. tokensvc allows 30 s.
const maxSkew = 10 * time.Second

// Client fetches tokens. It is safe for concurrent use.
type Client struct {
	opts   Options
	api    *oapi.ClientWithResponses
	params oapi.GetTokenParams
	key    string
	log    *slog.Logger

	mu               sync.Mutex
	offset           time.Duration // service clock minus device clock
	nonceUnsupported bool          // the service answered POST /token/nonce with 404 or 405
	loggedUnknown    bool          // the last useNonce found the clock unset and said so
}

// New returns a Client for o.
func New(o Options) (*Client, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Nonce == "" {
		o.Nonce = NonceAuto
	}
	if o.ClockFloor.IsZero() {
		o.ClockFloor = DefaultClockFloor()
	}
	c := &Client{opts: o, log: o.Logger}
	api, err := oapi.NewClientWithResponses(o.ServiceURL, oapi.WithHTTPClient(guarded(o.HTTPClient, c.VerifyTime)))
	if err != nil {
		return nil, fmt.Errorf("token service client: %w", err)
	}
	c.api = api
	if o.Module != "" {
		c.params.Module = &o.Module
	}
	if o.TTL > 0 {
		s := int(o.TTL / time.Second)
		c.params.Ttl = &s
	}
	if o.Transport != "" {
		t := oapi.GetTokenParamsTransport(o.Transport)
		c.params.Transport = &t
	}
	c.key = strings.Join([]string{o.ServiceURL, o.DeviceID, o.Module, o.Transport, strconv.Itoa(int(o.TTL / time.Second))}, "\x00")
	return c, nil
}

// Key identifies what this client asks for; tokens fetched for another key must not be
// used in its place.
func (c *Client) Key() string { return c.key }

// Offset is the last known difference service clock minus device clock.
func (c *Client) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// SetOffset seeds the clock offset (e.g. from a persisted token after a reboot on a
// device whose clock kept running).
func (c *Client) SetOffset(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = d
}

// Fetch gets a new token. Failures are *Error values of class ErrUnavailable or
// ErrRefused. While the device clock is unknown (see NonceAuto) the assertion carries a
// nonce from POST /token/nonce. A time-based assertion refused because the device clock
// is off is retried once, with a nonce (or, with NonceNever or a service without
// nonces, with the clock corrected from the service's Date header).
func (c *Client) Fetch(ctx context.Context) (token.Token, error) {
	var t token.Token
	err := c.authorized(func(withNonce bool) (retry bool, err error) {
		t, retry, err = c.fetchOnce(ctx, withNonce)
		return retry, err
	})
	return t, err
}

// authorized runs once, an authenticated request (with a nonce when withNonce), and
// runs it again once when it says so: a time-based assertion refused because the
// device clock was off is retried with a nonce or, with NonceNever or a service without
// nonces, with the clock corrected from the service's Date header.
func (c *Client) authorized(once func(withNonce bool) (retry bool, err error)) error {
	retry, err := once(c.useNonce())
	if retry {
		_, err = once(c.opts.Nonce != NonceNever)
	}
	return err
}

// assertion signs the assertion for one request: with a fresh nonce when withNonce and
// the service offers nonces (usedNonce), else as of the device clock corrected by
// offset.
func (c *Client) assertion(ctx context.Context, withNonce bool, offset time.Duration) (a string, usedNonce bool, err error) {
	if withNonce && c.offersNonce() {
		n, err := c.nonce(ctx)
		var fe *Error
		if errors.As(err, &fe) && c.nonceMissing(fe) {
			return c.assertion(ctx, false, offset)
		}
		if err != nil {
			return "", false, err
		}
		if a, err = c.opts.Signer.NonceAssertion(c.opts.DeviceID, c.opts.Audience, n); err != nil {
			return "", false, &Error{Class: ErrRefused, Detail: err.Error()}
		}
		return a, true, nil
	}
	if a, err = c.opts.Signer.Assertion(c.opts.DeviceID, c.opts.Audience, c.opts.Now().Add(offset)); err != nil {
		return "", false, &Error{Class: ErrRefused, Detail: err.Error()}
	}
	return a, false, nil
}

// fetchOnce makes one GET /token. retry is true when a time-based assertion was
// refused and the service's clock differs from the corrected device clock.
func (c *Client) fetchOnce(ctx context.Context, withNonce bool) (t token.Token, retry bool, err error) {
	var r oapi.TokenResponse
	sent, retry, err := c.exchange(ctx, withNonce, func(ctx context.Context, auth oapi.RequestEditorFn) (answer, error) {
		resp, err := c.api.GetTokenWithResponse(ctx, &c.params, auth)
		if err != nil {
			return answer{}, err
		}
		var at *time.Time
		if j := resp.JSON200; j != nil {
			r, at = *j, &j.ServerTime
		}
		usable := r.Token != "" && usableTimes(r.ServerTime, r.RefreshAfter, r.ExpiresAt)
		a := newAnswer(resp.HTTPResponse, at, usable, "response lacks a usable token or times", func() string { return problemDetail(resp) })
		return a, nil
	})
	if err != nil {
		return token.Token{}, retry, err
	}
	return token.Token{Response: r, RequestedAt: sent, Key: c.key}, false, nil
}

// usableTimes says a response's times make sense: it expires after the service's now
// and asks to be refreshed between the two.
func usableTimes(serverTime, refreshAfter, expiresAt time.Time) bool {
	return expiresAt.After(serverTime) && !refreshAfter.Before(serverTime) && !refreshAfter.After(expiresAt)
}

// answer is what exchange needs of one response, whatever the operation.
type answer struct {
	status int
	header http.Header
	// ok says a 200 carried a usable body, whose service time is serverTime.
	ok         bool
	serverTime time.Time
	// detail is the problem's detail (or why a 200 is unusable); it holds no secret.
	detail string
}

// newAnswer is the answer of resp: serverTime is the decoded 200 body's (nil when
// there is none), usable whether that body is (else unusable says why), problem the
// refusal's detail.
func newAnswer(resp *http.Response, serverTime *time.Time, usable bool, unusable string, problem func() string) answer {
	a := answer{status: resp.StatusCode, header: resp.Header}
	switch {
	case serverTime != nil:
		if a.serverTime, a.ok = *serverTime, usable; !usable {
			a.detail = unusable
		}
	case a.status == http.StatusOK:
		a.detail = "response is not JSON"
	default:
		a.detail = problem()
	}
	return a
}

// exchange makes one authenticated request: it signs the assertion, send makes the
// call with auth adding it, and the answer is classified for the retry policy. sent is
// when the request left (the answer was made after it); retry is true when a
// time-based assertion was refused and the service's clock differs from the corrected
// device clock.
func (c *Client) exchange(ctx context.Context, withNonce bool, send func(context.Context, oapi.RequestEditorFn) (answer, error)) (sent time.Time, retry bool, err error) {
	offset := c.Offset()
	assertion, usedNonce, err := c.assertion(ctx, withNonce, offset)
	if err != nil {
		return time.Time{}, false, err
	}
	// The answer is made after this instant, whatever a nonce request took before.
	sent = c.opts.Now()
	a, err := send(ctx, func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+assertion)
		r.Header.Set("Accept", "application/json")
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return sent, false, ctx.Err()
		}
		// Transport errors name the URL and the cause, never headers.
		return sent, false, &Error{Class: ErrUnavailable, Detail: err.Error()}
	}
	if a.status == http.StatusOK && a.ok {
		c.learnOffset(a.serverTime.Sub(sent), "serverTime")
		return sent, false, nil
	}

	e := &Error{Class: ErrRefused, Status: a.status, Detail: a.detail}
	switch {
	case a.status == http.StatusTooManyRequests || a.status >= 500:
		e.Class = ErrUnavailable
		e.RetryAfter = retryAfter(a.header.Get("Retry-After"), sent)
	case a.status == http.StatusUnauthorized:
		// The service says nothing about why; if its clock disagrees with ours, ours is
		// the likely reason (no RTC, not yet synced): correct and try once more. A nonce
		// assertion does not depend on the clock, so its refusal is final.
		if !usedNonce && c.correctClock(a.header, sent, offset) {
			return sent, true, e
		}
	case a.status == http.StatusOK:
		e.Class = ErrUnavailable // an unusable answer: the next may be fine
	}
	return sent, false, e
}

// correctClock learns the offset from a 401's Date header when it shows the device
// clock (corrected by offset) off by more than maxSkew; it reports whether it did, so
// the request is worth one more try.
func (c *Client) correctClock(h http.Header, sent time.Time, offset time.Duration) bool {
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return false
	}
	if skew := date.Sub(sent.Add(offset)); skew <= maxSkew && skew >= -maxSkew {
		return false
	}
	c.learnOffset(date.Sub(sent), "Date header")
	return true
}

func (c *Client) learnOffset(d time.Duration, from string) {
	c.mu.Lock()
	old := c.offset
	c.offset = d
	c.mu.Unlock()
	if diff := d - old; diff > maxSkew || diff < -maxSkew {
		c.log.Warn("device clock differs from the token service; using the service's time",
			"offset", d.Round(time.Second).String(), "from", from)
	}
}

func problemDetail(r *oapi.GetTokenResponse) string {
	return firstProblem(r.StatusCode(), r.ApplicationproblemJSON400, r.ApplicationproblemJSON401, r.ApplicationproblemJSON403, r.ApplicationproblemJSON503)
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
