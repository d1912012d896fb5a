package limits

import (
	"context"
	"time"
)

// SharedBuckets keeps the per-device buckets in a store every replica shares, so a
// device's budget is the same whether it reaches one replica or five.
type SharedBuckets interface {
	// Take takes one token at now from device id's bucket (rate tokens per second, at
	// most burst) and returns 0 when there was one, else how long until there will be.
	// It returns an error (store.ErrUnavailable, wrapped) when the store cannot answer.
	Take(ctx context.Context, id string, rate float64, burst int, now time.Time) (wait time.Duration, err error)
}

// Option configures Limits.
type Option func(*Limits)

// WithSharedBuckets keeps the device buckets in sb, each call bounded by timeout. When
// sb cannot answer in time the device is held to this process's own bucket instead:
// limits are a defence against load, not an authorisation decision, so they degrade to
// per-replica rather than refusing every device.
func WithSharedBuckets(sb SharedBuckets, timeout time.Duration) Option {
	return func(l *Limits) { l.shared, l.sharedTimeout = sb, timeout }
}

// takeShared takes from id's shared bucket; answered is false when the store did not
// answer (the caller falls back to the local bucket), else err is the refusal, if any.
func (l *Limits) takeShared(id string, now time.Time) (answered bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.sharedTimeout)
	defer cancel()
	wait, serr := l.shared.Take(ctx, id, l.cfg.DeviceRate, l.cfg.DeviceBurst, now)
	if serr != nil {
		if l.onSharedError != nil {
			l.onSharedError(serr)
		}
		return false, nil
	}
	if wait > 0 {
		return true, &Error{Limit: LimitDevice, Wait: wait, err: ErrRateLimited}
	}
	return true, nil
}

// WithSharedErrors calls f with each failure of the shared buckets (for the log).
func WithSharedErrors(f func(error)) Option {
	return func(l *Limits) { l.onSharedError = f }
}
