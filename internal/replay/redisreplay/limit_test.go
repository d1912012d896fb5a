package redisreplay_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/redistest"
	"github.com/tokensvc/tokensvc/internal/replay/redisreplay"
)

var _ limits.SharedBuckets = (*redisreplay.Store)(nil)

// TestSharedDeviceBudget: two replicas' Limits over one server hold a device to one
// budget (burst 3, then one every 5 s) whichever replica it reaches, and other
// devices keep their own; with the server gone each replica falls back to its own
// bucket.
func TestSharedDeviceBudget(t *testing.T) {
	srv := redistest.Start(t)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	cfg := limits.Config{DeviceRate: 0.2, DeviceBurst: 3}
	replica := func() *limits.Limits {
		return limits.New(cfg, clock, limits.WithSharedBuckets(mustStore(t, srv, srv.Password), timeout))
	}
	a, b := replica(), replica()
	steps := []struct {
		name    string
		l       *limits.Limits
		id      string
		advance time.Duration
		wantOK  bool
		// wantWait is the Retry-After of a refusal, in seconds.
		wantWait int
	}{
		{"1st on A", a, "d1", 0, true, 0},
		{"2nd on B", b, "d1", 0, true, 0},
		{"3rd on A", a, "d1", 0, true, 0},
		{"4th on B: the budget is spent on both", b, "d1", 0, false, 5},
		{"4th on A too", a, "d1", 0, false, 5},
		{"another device on B", b, "d2", 0, true, 0},
		{"5 s later, one more on B", b, "d1", 5 * time.Second, true, 0},
		{"and not another on A", a, "d1", 0, false, 5},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		err := st.l.Device(st.id)
		var le *limits.Error
		switch {
		case st.wantOK && err != nil:
			t.Errorf("%s: got %v, want allowed", st.name, err)
		case !st.wantOK && !errors.As(err, &le):
			t.Errorf("%s: got %v, want a rate-limit refusal", st.name, err)
		case !st.wantOK && (le.RetryAfter() != st.wantWait || !errors.Is(err, limits.ErrRateLimited)):
			t.Errorf("%s: got %v with Retry-After %d, want ErrRateLimited with %d", st.name, err, le.RetryAfter(), st.wantWait)
		}
	}

	// The server dies: each replica falls back to its own bucket (fresh here: burst 3).
	srv.Kill()
	var failures int
	down := limits.New(cfg, clock, limits.WithSharedBuckets(mustStore(t, srv, srv.Password), timeout),
		limits.WithSharedErrors(func(error) { failures++ }))
	for i := range 3 {
		if err := down.Device("d1"); err != nil {
			t.Errorf("request %d with the server down: got %v, want the local bucket's allowance", i+1, err)
		}
	}
	if err := down.Device("d1"); !errors.Is(err, limits.ErrRateLimited) {
		t.Errorf("4th request with the server down: got %v, want the local bucket's refusal", err)
	}
	if failures != 4 {
		t.Errorf("shared-bucket failures reported: got %d, want 4", failures)
	}
}
