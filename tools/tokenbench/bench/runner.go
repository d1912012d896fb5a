package bench

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

// Phase is one measured run against one URL.
type Phase struct {
	Name     string
	URL      string // full URL of the endpoint
	Workers  int
	Duration time.Duration // stop starting requests after this long
	Requests int           // and after this many (0: no count bound)
	MaxWait  time.Duration // longest Retry-After honoured before retrying
	Timeout  time.Duration // per request
}

// AttemptFunc makes one request of a phase; each worker has its own. more is false
// when the worker has nothing left to do (the phase ends for it).
type AttemptFunc func(ctx context.Context) (o Outcome, more bool)

// RunWorkers runs p.Workers workers, each calling the attempt function newWorker gave it
// until p.Duration (or p.Requests) is used up, ctx ends or the attempt says there is no
// more, honouring the Retry-After of deliberate refusals (capped by p.MaxWait and the
// end of the phase), and summarizes the outcomes. It returns when every worker has
// finished its last request: at the latest p.Duration + one request timeout after it
// started.
func RunWorkers(ctx context.Context, p Phase, newWorker func(w int) AttemptFunc) Result {
	deadline := time.Now().Add(p.Duration)
	var issued atomic.Int64
	tallies := make([]*Tally, p.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range p.Workers {
		t := NewTally()
		tallies[w] = t
		attempt := newWorker(w)
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if p.Requests > 0 && issued.Add(1) > int64(p.Requests) {
					return
				}
				o, more := attempt(ctx)
				if !more {
					return
				}
				t.Record(o)
				if o.Wait > 0 {
					SleepUntil(ctx, min(o.Wait, p.MaxWait, time.Until(deadline)))
				}
			}
		})
	}
	wg.Wait()
	r := Summarize(p.Name, p.URL, p.Workers, time.Since(start), tallies)
	r.Interrupted = ctx.Err() != nil
	return r
}

// TokenPhase drives GET /token at p.URL for devices, a fresh HS256 assertion per
// request, over client's keep-alive connections; see RunWorkers.
func TokenPhase(ctx context.Context, client *http.Client, p Phase, devices []Device, audience string) Result {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	return RunWorkers(ctx, p, func(w int) AttemptFunc {
		s := NewSigner(audience, strconv.Itoa(w)+"-"+runID+"-")
		// Devices are spread over workers round-robin, so no two workers share one
		// device's per-device rate limit unless devices < workers.
		k := w
		return func(ctx context.Context) (Outcome, bool) {
			d := devices[k%len(devices)]
			k += p.Workers
			return TryToken(ctx, client, p.URL, p.Timeout, s.Sign(d, time.Now())), true
		}
	})
}

// OutcomeKind classifies one exchange.
type OutcomeKind int

const (
	// OutcomeOK is a 2xx answer.
	OutcomeOK OutcomeKind = iota
	// OutcomeRefused is a deliberate refusal: 429 or 503 with Retry-After.
	OutcomeRefused
	// OutcomeError is any other status, or a transport failure.
	OutcomeError
	// OutcomeCanceled is a request the run's end cut short: not counted.
	OutcomeCanceled
)

// Outcome is what one exchange came to.
type Outcome struct {
	Kind    OutcomeKind
	Key     string        // status or error class, for the refusal and error tables
	Latency time.Duration // of a 2xx exchange: request start to the last body byte
	// Wait is the Retry-After of a refusal; RunWorkers sleeps it. An attempt that
	// schedules its own retry returns 0.
	Wait    time.Duration
	Resumed bool // the TLS session was resumed (the storm counts these)
}

// TryToken does one GET of url with the assertion as bearer token; see TryRequest.
func TryToken(ctx context.Context, client *http.Client, url string, timeout time.Duration, assertion string) Outcome {
	return TryRequest(ctx, client, timeout, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+assertion)
		}
		return req, err
	})
}

// TryRequest sends the request build makes (bounded by timeout), reads the whole body
// (so a keep-alive connection goes back to the pool), and classifies the answer.
func TryRequest(ctx context.Context, client *http.Client, timeout time.Duration, build func(context.Context) (*http.Request, error)) Outcome {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := build(rctx)
	if err != nil {
		return Outcome{Kind: OutcomeError, Key: "request"}
	}
	begin := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Outcome{Kind: OutcomeCanceled}
		}
		return Outcome{Kind: OutcomeError, Key: TransportClass(err)}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	elapsed := time.Since(begin)
	if err != nil {
		if ctx.Err() != nil {
			return Outcome{Kind: OutcomeCanceled}
		}
		return Outcome{Kind: OutcomeError, Key: "body"}
	}
	resumed := resp.TLS != nil && resp.TLS.DidResume
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return Outcome{Kind: OutcomeOK, Latency: elapsed, Resumed: resumed}
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return Outcome{Kind: OutcomeRefused, Key: strconv.Itoa(code), Wait: d, Resumed: resumed}
		}
		return Outcome{Kind: OutcomeError, Key: strconv.Itoa(code) + " without Retry-After"}
	default:
		return Outcome{Kind: OutcomeError, Key: strconv.Itoa(code)}
	}
}

// TransportClass names a transport error coarsely, for the error table.
func TransportClass(err error) string {
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
	case errors.Is(err, syscall.ECONNREFUSED):
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

// ParseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
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

// SleepUntil waits d or until ctx ends.
func SleepUntil(ctx context.Context, d time.Duration) {
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
