package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
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
	deadline := time.Now().Add(p.duration)
	var issued atomic.Int64
	tallies := make([]*tally, p.workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range p.workers {
		t := newTally()
		tallies[w] = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newSigner(audience, strconv.Itoa(w)+"-"+strconv.FormatInt(start.UnixNano(), 36)+"-")
			// Devices are spread over workers round-robin, so no two workers share one
			// device's per-device rate limit unless devices < workers.
			k := w
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if p.requests > 0 && issued.Add(1) > int64(p.requests) {
					return
				}
				d := devices[k%len(devices)]
				k += p.workers
				wait := exchange(ctx, client, p, s.sign(d, time.Now()), t)
				if wait > 0 {
					sleepUntil(ctx, min(wait, p.maxWait, time.Until(deadline)))
				}
			}
		}()
	}
	wg.Wait()
	r := summarize(p.name, p.url, p.workers, time.Since(start), tallies)
	r.Interrupted = ctx.Err() != nil
	return r
}

// exchange does one GET with the assertion and records its outcome in t. It returns the
// Retry-After delay of a deliberate refusal (429 or 503 with Retry-After), else 0.
func exchange(ctx context.Context, client *http.Client, p phase, assertion string, t *tally) time.Duration {
	o := tryToken(ctx, client, p.url, p.timeout, assertion)
	t.record(o)
	return o.wait
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

// tryToken does one GET of url with the assertion as bearer token, reading the whole
// body (so a keep-alive connection goes back to the pool), and classifies the answer.
func tryToken(ctx context.Context, client *http.Client, url string, timeout time.Duration, assertion string) outcome {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return outcome{kind: outcomeError, key: "request"}
	}
	req.Header.Set("Authorization", "Bearer "+assertion)
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
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case isConnRefused(err):
		return "connection refused"
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
