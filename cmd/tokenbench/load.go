package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Device is one simulated device: its ID and the HS256 secret's text.
type Device struct {
	ID     string
	Secret string
}

// phase is one measured run against one URL.
type phase struct {
	name     string
	url      string // full URL of the token endpoint
	workers  int
	duration time.Duration // stop starting requests after this long
	requests int           // and after this many (0: no count bound)
	maxWait  time.Duration // longest Retry-After honoured before retrying
	timeout  time.Duration // per request
}

// runPhase drives p with p.workers concurrent workers, each with a fresh assertion per
// request, and returns what it measured. It returns when every worker has finished its
// last request: at the latest p.duration + one request timeout after it started, or
// sooner if ctx ends.
func runPhase(ctx context.Context, client *http.Client, p phase, devices []Device, audience string) Result {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	return runWorkers(ctx, p, func(w int) attemptFunc {
		s := newSigner(audience, strconv.Itoa(w)+"-"+runID+"-")
		// Devices are spread over workers round-robin, so no two workers share one
		// device's per-device rate limit unless devices < workers.
		k := w
		return func(ctx context.Context) outcome {
			d := devices[k%len(devices)]
			k += p.workers
			return tryToken(ctx, client, p.url, p.timeout, s.sign(d, time.Now()))
		}
	})
}

// attemptFunc makes one request of a phase; each worker has its own.
type attemptFunc func(ctx context.Context) outcome

// runWorkers runs p.workers workers, each calling the attempt function newWorker gave it
// until p.duration (or p.requests) is used up, honouring the Retry-After of deliberate
// refusals (capped by p.maxWait and the end of the phase), and summarizes the outcomes.
func runWorkers(ctx context.Context, p phase, newWorker func(w int) attemptFunc) Result {
	deadline := time.Now().Add(p.duration)
	var issued atomic.Int64
	tallies := make([]*tally, p.workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range p.workers {
		t := newTally()
		tallies[w] = t
		attempt := newWorker(w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if p.requests > 0 && issued.Add(1) > int64(p.requests) {
					return
				}
				o := attempt(ctx)
				t.record(o)
				if o.wait > 0 {
					sleepUntil(ctx, min(o.wait, p.maxWait, time.Until(deadline)))
				}
			}
		}()
	}
	wg.Wait()
	r := summarize(p.name, p.url, p.workers, time.Since(start), tallies)
	r.Interrupted = ctx.Err() != nil
	return r
}

// outcomeKind classifies one exchange.
type outcomeKind int

const (
	outcomeOK       outcomeKind = iota // 2xx
	outcomeRefused                     // 429 or 503 with Retry-After: deliberate
	outcomeError                       // any other status, or a transport failure
	outcomeCanceled                    // the run ended while the request was out: not counted
)

// outcome is what one GET /token came to.
type outcome struct {
	kind    outcomeKind
	key     string        // status or error class, for the refusal and error tables
	latency time.Duration // of a 2xx exchange: request start to the last body byte
	wait    time.Duration // Retry-After of a refusal
	resumed bool          // the TLS session was resumed (the storm counts these)
}

// record counts o in t.
func (t *tally) record(o outcome) {
	switch o.kind {
	case outcomeOK:
		t.lat = append(t.lat, o.latency)
	case outcomeRefused:
		t.refusals[o.key]++
	case outcomeError:
		t.errors[o.key]++
	}
}

// tryToken does one GET of url with the assertion as bearer token; see tryRequest.
func tryToken(ctx context.Context, client *http.Client, url string, timeout time.Duration, assertion string) outcome {
	return tryRequest(ctx, client, timeout, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+assertion)
		}
		return req, err
	})
}

// tryRequest sends the request build makes (bounded by timeout), reads the whole body
// (so a keep-alive connection goes back to the pool), and classifies the answer.
func tryRequest(ctx context.Context, client *http.Client, timeout time.Duration, build func(context.Context) (*http.Request, error)) outcome {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := build(rctx)
	if err != nil {
		return outcome{kind: outcomeError, key: "request"}
	}
	begin := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{kind: outcomeCanceled}
		}
		return outcome{kind: outcomeError, key: transportClass(err)}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	elapsed := time.Since(begin)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{kind: outcomeCanceled}
		}
		return outcome{kind: outcomeError, key: "body"}
	}
	resumed := resp.TLS != nil && resp.TLS.DidResume
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return outcome{kind: outcomeOK, latency: elapsed, resumed: resumed}
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return outcome{kind: outcomeRefused, key: strconv.Itoa(code), wait: d, resumed: resumed}
		}
		return outcome{kind: outcomeError, key: strconv.Itoa(code) + " without Retry-After"}
	default:
		return outcome{kind: outcomeError, key: strconv.Itoa(code)}
	}
}

// transportClass names a transport error coarsely, for the error table.
func transportClass(err error) string {
	var netErr net.Error
	var tlsAlert tls.AlertError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case strings.Contains(err.Error(), "TLS handshake timeout"):
		return "TLS handshake timeout"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case isConnRefused(err):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port left"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed early"
	case errors.As(err, &tlsAlert), errors.As(err, &certErr):
		return "TLS error"
	default:
		return "transport"
	}
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// sleepUntil waits d or until ctx ends.
func sleepUntil(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
