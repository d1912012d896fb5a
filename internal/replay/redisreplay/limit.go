package redisreplay

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokensvc/tokensvc/internal/store"
)

// LimitKeyPrefix starts the keys of the per-device rate-limit buckets.
const LimitKeyPrefix = "tokensvc:limit:"

// gcra is one device's token bucket as a generic cell rate algorithm: the key (a hash,
// so the script's writes never count as the replay store's SETs in the server's
// command statistics) holds the theoretical arrival time (ms) of the next token; one request costs one emission
// interval T = 1000/rate ms, and is allowed while that time is at most burst·T ahead of
// now. It returns 0 when allowed (and moves the time on), else the wait in ms. The key
// expires when the bucket would be full again, so idle devices cost nothing.
var gcra = redis.NewScript(`
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or now)
if tat < now then tat = now end
local next = tat + t
local over = next - now - burst * t
if over > 0 then return math.ceil(over) end
redis.call('HSET', KEYS[1], 'tat', tostring(next))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(next - now)))
return 0
`)

// Take takes one token at now from device id's bucket (rate per second, at most burst)
// in one round trip (EVALSHA; the first call after the server lost the script also
// sends it). It returns 0 or the wait until a token is there, and store.ErrUnavailable
// (wrapped) when the server does not answer within the timeout.
func (s *Store) Take(ctx context.Context, id string, rate float64, burst int, now time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ms, err := gcra.Run(ctx, s.c, []string{LimitKeyPrefix + id},
		now.UnixMilli(), strconv.FormatFloat(1000/rate, 'f', 3, 64), burst).Int64()
	if err != nil {
		return 0, fmt.Errorf("rate limit in the replay store: %w: %v", store.ErrUnavailable, err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
