// Package backoff computes retry delays: exponential with full jitter, so that a fleet
// that fails at the same moment (a power cut, a service outage) spreads its retries
// instead of returning in waves, and never sooner than the server's Retry-After (up to
// MaxRetryAfter or the policy's Max, whichever is longer: a Retry-After of a day must
// not keep a device from retrying past the expiry of the credential it holds).
package backoff

import (
	"math/rand/v2"
	"time"
)

// MaxRetryAfter is the longest server Retry-After Delay honours when the policy's Max
// is shorter; tokensvc itself asks for seconds.
const MaxRetryAfter = 10 * time.Minute

// Policy is an exponential backoff with full jitter.
type Policy struct {
	// Min is the ceiling of the first delay; Max caps every ceiling.
	Min, Max time.Duration
	// Rand returns a uniform value in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

// Delay returns how long to wait before retry number attempt (1 for the first retry).
// The delay is uniform in [0, min(Max, Min·2^(attempt-1))) — but at least Min/2 so a
// device never spins — and at least retryAfter plus up to half of it again, so that
// clients told to come back together do not. A retryAfter beyond the longer of Max and
// MaxRetryAfter counts as that: a proxy's or a misconfigured service's "come back
// tomorrow" must not keep a device from retrying past the expiry of the credential it
// holds.
func (p Policy) Delay(attempt int, retryAfter time.Duration) time.Duration {
	r := p.Rand
	if r == nil {
		r = rand.Float64
	}
	ceil := p.Min
	for i := 1; i < attempt && ceil < p.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.Max)
	d := max(time.Duration(r()*float64(ceil)), p.Min/2)
	retryAfter = min(retryAfter, max(p.Max, MaxRetryAfter))
	if retryAfter > 0 {
		d = max(d, retryAfter+time.Duration(r()*float64(retryAfter/2)))
	}
	return d
}

// Jitter returns a uniform duration in [0, d), for spreading scheduled work.
func (p Policy) Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	r := p.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(r() * float64(d))
}
