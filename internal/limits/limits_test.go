package limits_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/testclock"
)

func newClock() *testclock.Clock { return testclock.New(time.Unix(1_700_000_000, 0)) }

func TestDevice(t *testing.T) {
	type step struct {
		advance        time.Duration
		device         string
		wantErr        bool
		wantRetryAfter int
	}
	tests := []struct {
		name  string
		cfg   limits.Config
		steps []step
	}{
		{
			name: "burst then refused then refilled",
			cfg:  limits.Config{DeviceRate: 0.5, DeviceBurst: 2},
			steps: []step{
				{device: "a"}, {device: "a"},
				{device: "a", wantErr: true, wantRetryAfter: 2},
				{advance: 1500 * time.Millisecond, device: "a", wantErr: true, wantRetryAfter: 1},
				{advance: 500 * time.Millisecond, device: "a"},
			},
		},
		{
			name: "devices have their own buckets",
			cfg:  limits.Config{DeviceRate: 1, DeviceBurst: 1},
			steps: []step{
				{device: "a"},
				{device: "a", wantErr: true, wantRetryAfter: 1},
				{device: "b"},
			},
		},
		{
			name:  "zero rate disables",
			cfg:   limits.Config{},
			steps: []step{{device: "a"}, {device: "a"}, {device: "a"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			l := limits.New(tc.cfg, clk.Now)
			for i, s := range tc.steps {
				clk.Advance(s.advance)
				err := l.Device(s.device)
				if (err != nil) != s.wantErr {
					t.Fatalf("step %d: got err %v, want error %v", i, err, s.wantErr)
				}
				if err == nil {
					continue
				}
				var le *limits.Error
				if !errors.As(err, &le) || !errors.Is(err, limits.ErrRateLimited) || le.Limit != limits.LimitDevice {
					t.Fatalf("step %d: got %v, want a device *limits.Error wrapping ErrRateLimited", i, err)
				}
				if got := le.RetryAfter(); got != s.wantRetryAfter {
					t.Errorf("step %d: RetryAfter got %d, want %d", i, got, s.wantRetryAfter)
				}
			}
		})
	}
}

func TestGlobal(t *testing.T) {
	clk := newClock()
	l := limits.New(limits.Config{GlobalRate: 10, GlobalBurst: 3}, clk.Now)
	for i := range 3 {
		if err := l.Global(); err != nil {
			t.Fatalf("request %d: got %v, want nil", i, err)
		}
	}
	err := l.Global()
	var le *limits.Error
	if !errors.As(err, &le) || le.Limit != limits.LimitGlobal || le.RetryAfter() != 1 {
		t.Fatalf("got %v, want global limit with Retry-After 1", err)
	}
	clk.Advance(100 * time.Millisecond)
	if err := l.Global(); err != nil {
		t.Fatalf("after refill: got %v, want nil", err)
	}
}

func TestIdleDevicesDropped(t *testing.T) {
	clk := newClock()
	l := limits.New(limits.Config{DeviceRate: 1, DeviceBurst: 5}, clk.Now)
	for _, id := range []string{"a", "b", "c"} {
		if err := l.Device(id); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Tracked(); got != 3 {
		t.Fatalf("Tracked got %d, want 3", got)
	}
	clk.Advance(4 * time.Second)
	_ = l.Device("a") // not idle long enough: nothing dropped yet
	if got := l.Tracked(); got != 3 {
		t.Fatalf("after 4s Tracked got %d, want 3", got)
	}
	clk.Advance(5 * time.Second) // b and c idle 9s ≥ 5s refill time; a idle 5s
	_ = l.Device("d")
	if got := l.Tracked(); got != 1 {
		t.Fatalf("after sweep Tracked got %d, want 1 (d only)", got)
	}
}

func TestAcquire(t *testing.T) {
	l := limits.New(limits.Config{MaxInflight: 2}, nil)
	r1, err := l.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(); !errors.Is(err, limits.ErrOverloaded) {
		t.Fatalf("third Acquire got %v, want ErrOverloaded", err)
	}
	r1()
	r3, err := l.Acquire()
	if err != nil {
		t.Fatalf("after release got %v, want nil", err)
	}
	r2()
	r3()
}

// TestConcurrentDevices runs buckets from many goroutines (for the race detector) and
// checks the bucket still hands out exactly its burst while the clock stands still.
func TestConcurrentDevices(t *testing.T) {
	clk := newClock()
	l := limits.New(limits.Config{DeviceRate: 1, DeviceBurst: 10}, clk.Now)
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if l.Device("shared") == nil {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 10 {
		t.Errorf("allowed: got %d, want 10", got)
	}
}
