package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokensvc/tokensvc/internal/coalesce"
)

// recorder is a Func that records each batch, answers "<key>:<item>" per item (or a
// per-item error for items named "bad"), and can hold its calls until released.
type recorder struct {
	mu      sync.Mutex
	batches [][]string
	ctxs    []context.Context
	hold    chan struct{} // nil: answer at once
	failAll error
}

func (r *recorder) fn(ctx context.Context, key string, in []string) ([]coalesce.Result[string], error) {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(in))
	r.ctxs = append(r.ctxs, ctx)
	hold, failAll := r.hold, r.failAll
	r.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if failAll != nil {
		return nil, failAll
	}
	out := make([]coalesce.Result[string], len(in))
	for i, s := range in {
		if s == "bad" {
			out[i].Err = errBad
			continue
		}
		out[i].Val = key + ":" + s
	}
	return out, nil
}

var errBad = errors.New("bad item")

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n []int
	for _, b := range r.batches {
		n = append(n, len(b))
	}
	return n
}

type outcome struct {
	val string
	err error
}

// submit runs Do(in) for each of ins on its own goroutine and returns where their
// outcomes arrive, indexed like ins.
func submit(ctx context.Context, b *coalesce.Batcher[string, string], key string, ins ...string) []chan outcome {
	chs := make([]chan outcome, len(ins))
	for i, in := range ins {
		chs[i] = make(chan outcome, 1)
		go func() {
			v, err := b.Do(ctx, key, in)
			chs[i] <- outcome{v, err}
		}()
	}
	return chs
}

// startHeld makes one call for key that the recorder holds in flight, and waits until
// it is there.
func startHeld(t *testing.T, r *recorder, b *coalesce.Batcher[string, string], key string) chan outcome {
	t.Helper()
	before := len(r.sizes())
	r.mu.Lock()
	r.hold = make(chan struct{})
	r.mu.Unlock()
	first := submit(t.Context(), b, key, "first")[0]
	synctest.Wait()
	if got := r.sizes(); len(got) != before+1 || got[before] != 1 {
		t.Fatalf("batches: got %v, want one more, of 1 item", got)
	}
	return first
}

func TestLoneCallGoesOutAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 64, Linger: time.Second})
		defer b.Close()
		for i := range 3 {
			start := time.Now()
			v, err := b.Do(t.Context(), "k", fmt.Sprint(i))
			if err != nil || v != fmt.Sprintf("k:%d", i) {
				t.Fatalf("Do: got %q, %v", v, err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("lone call %d took %v of the bubble's clock, want 0 (no linger when idle)", i, d)
			}
		}
		if got := r.sizes(); !slices.Equal(got, []int{1, 1, 1}) {
			t.Errorf("batches: got %v, want [1 1 1]", got)
		}
	})
}

func TestBatchesAndSplits(t *testing.T) {
	tests := []struct {
		name  string
		max   int
		queue int
		want  []int // batch sizes, the held first call included
	}{
		{name: "queued calls go as one batch", max: 64, queue: 10, want: []int{1, 10}},
		{name: "split at max", max: 4, queue: 10, want: []int{1, 4, 4, 2}},
		{name: "exactly max", max: 5, queue: 5, want: []int{1, 5}},
		{name: "max 1 disables", max: 1, queue: 3, want: []int{1, 1, 1, 1}},
		{name: "max 0 disables", max: 0, queue: 3, want: []int{1, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := &recorder{}
				b := coalesce.New(r.fn, coalesce.Options{Max: tt.max})
				defer b.Close()
				first := startHeld(t, r, b, "k")
				ins := make([]string, tt.queue)
				for i := range ins {
					ins[i] = fmt.Sprint(i)
				}
				chs := submit(t.Context(), b, "k", ins...)
				synctest.Wait()
				if tt.max > 1 {
					if got := b.Pending("k"); got != tt.queue {
						t.Fatalf("Pending: got %d, want %d", got, tt.queue)
					}
				}
				close(r.hold)
				if o := <-first; o.err != nil || o.val != "k:first" {
					t.Fatalf("first: got %q, %v", o.val, o.err)
				}
				for i, ch := range chs {
					if o := <-ch; o.err != nil || o.val != "k:"+ins[i] {
						t.Errorf("item %d: got %q, %v, want %q", i, o.val, o.err, "k:"+ins[i])
					}
				}
				got := r.sizes()
				if tt.max <= 1 {
					slices.Sort(got) // concurrent single calls: order is the scheduler's
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("batch sizes: got %v, want %v", got, tt.want)
				}
			})
		})
	}
}

func TestKeysDoNotShareBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8})
		defer b.Close()
		first := startHeld(t, r, b, "a")
		// Key b is idle although a is busy: its call goes out at once.
		chB := submit(t.Context(), b, "b", "x")
		synctest.Wait()
		if got := r.sizes(); !slices.Equal(got, []int{1, 1}) {
			t.Fatalf("batches: got %v, want [1 1] (b not held behind a)", got)
		}
		close(r.hold)
		<-first
		if o := <-chB[0]; o.val != "b:x" || o.err != nil {
			t.Errorf("b: got %q, %v", o.val, o.err)
		}
	})
}

func TestItemErrorFailsOnlyItsCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8})
		defer b.Close()
		first := startHeld(t, r, b, "k")
		chs := submit(t.Context(), b, "k", "a", "bad", "c")
		synctest.Wait()
		close(r.hold)
		<-first
		want := []outcome{{val: "k:a"}, {err: errBad}, {val: "k:c"}}
		for i, ch := range chs {
			o := <-ch
			if o.val != want[i].val || !errors.Is(o.err, want[i].err) || (want[i].err == nil) != (o.err == nil) {
				t.Errorf("item %d: got %q, %v, want %q, %v", i, o.val, o.err, want[i].val, want[i].err)
			}
		}
		if got := r.sizes(); !slices.Equal(got, []int{1, 3}) {
			t.Errorf("batch sizes: got %v, want [1 3]", got)
		}
	})
}

func TestBatchErrorFailsTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDown := errors.New("vault down")
		r := &recorder{failAll: errDown}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8})
		defer b.Close()
		first := startHeld(t, r, b, "k")
		chs := submit(t.Context(), b, "k", "a", "b")
		synctest.Wait()
		close(r.hold)
		for i, ch := range append(chs, first) {
			if o := <-ch; !errors.Is(o.err, errDown) {
				t.Errorf("caller %d: got %v, want %v", i, o.err, errDown)
			}
		}
	})
}

func TestFailQueued(t *testing.T) {
	errDown := errors.New("vault down")
	errOther := errors.New("other")
	tests := []struct {
		name      string
		err       error
		wantSizes []int
	}{
		// The held call fails with an outage, and so does the next batch: the 6 still
		// queued fail with it, without a call.
		{name: "outage fails the backlog", err: errDown, wantSizes: []int{1, 4}},
		// Another error fails only its batch; the backlog goes out (and fails on its own).
		{name: "other errors do not", err: errOther, wantSizes: []int{1, 4, 4, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := &recorder{failAll: tt.err}
				b := coalesce.New(r.fn, coalesce.Options{Max: 4, FailQueued: func(err error) bool { return errors.Is(err, errDown) }})
				defer b.Close()
				first := startHeld(t, r, b, "k")
				chs := submit(t.Context(), b, "k", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
				synctest.Wait()
				r.mu.Lock()
				held := r.hold
				r.hold = nil // the backlog's own calls, if any, answer at once
				r.mu.Unlock()
				close(held)
				for i, ch := range append(chs, first) {
					if o := <-ch; !errors.Is(o.err, tt.err) {
						t.Errorf("caller %d: got %v, want %v", i, o.err, tt.err)
					}
				}
				if got := r.sizes(); !slices.Equal(got, tt.wantSizes) {
					t.Errorf("batch sizes: got %v, want %v", got, tt.wantSizes)
				}
			})
		})
	}
}

func TestCallerGivingUpLeavesTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8})
		defer b.Close()
		first := startHeld(t, r, b, "k")
		// One queued caller gives up before its batch goes: it returns at once and is
		// left out of the batch; the others are served.
		quit, cancelQuit := context.WithCancel(t.Context())
		gone := submit(quit, b, "k", "gone")[0]
		chs := submit(t.Context(), b, "k", "a", "b")
		synctest.Wait()
		cancelQuit()
		if o := <-gone; !errors.Is(o.err, context.Canceled) {
			t.Fatalf("cancelled caller: got %v, want context.Canceled", o.err)
		}
		close(r.hold)
		<-first
		for i, ch := range chs {
			if o := <-ch; o.err != nil {
				t.Errorf("item %d: %v", i, o.err)
			}
		}
		got := slices.Sorted(slices.Values(r.batches[1]))
		if !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("second batch: got %v, want [a b]", got)
		}
	})
}

func TestCallerCancelDoesNotCancelItsBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8})
		defer b.Close()
		r.hold = make(chan struct{})
		ctx, cancel := context.WithCancel(t.Context())
		mine := submit(ctx, b, "k", "mine")[0]
		synctest.Wait()
		cancel()
		if o := <-mine; !errors.Is(o.err, context.Canceled) {
			t.Fatalf("cancelled caller: got %v, want context.Canceled", o.err)
		}
		r.mu.Lock()
		batchCtx := r.ctxs[0]
		r.mu.Unlock()
		if err := batchCtx.Err(); err != nil {
			t.Fatalf("the batch's context ended with its caller: %v", err)
		}
		close(r.hold)
		synctest.Wait() // the batch completes; its answer is dropped without blocking
	})
}

// rehold holds the recorder's next calls and releases those held so far.
func rehold(r *recorder) {
	r.mu.Lock()
	old := r.hold
	r.hold = make(chan struct{})
	r.mu.Unlock()
	close(old)
}

// TestLingerWaitsForTheLastBatchsSize: a follow-up batch waits until as many items
// are queued as the batch before it carried, and no longer, or for Linger at most.
func TestLingerWaitsForTheLastBatchsSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8, Linger: 10 * time.Millisecond})
		defer b.Close()
		var chs []chan outcome
		chs = append(chs, startHeld(t, r, b, "k"))
		chs = append(chs, submit(t.Context(), b, "k", "a", "b", "c")...)
		synctest.Wait()
		// The batch before carried one item and three are queued: they go at once.
		rehold(r)
		synctest.Wait()
		if got := r.sizes(); !slices.Equal(got, []int{1, 3}) {
			t.Fatalf("batches: got %v, want [1 3]", got)
		}
		// Behind the batch of three, one item waits for two more (not for Max) ...
		chs = append(chs, submit(t.Context(), b, "k", "d")...)
		synctest.Wait()
		rehold(r)
		synctest.Wait()
		if got := r.sizes(); !slices.Equal(got, []int{1, 3}) {
			t.Fatalf("batches while lingering: got %v, want [1 3]", got)
		}
		// ... and goes as soon as three are there.
		chs = append(chs, submit(t.Context(), b, "k", "e", "f")...)
		synctest.Wait()
		if got := r.sizes(); !slices.Equal(got, []int{1, 3, 3}) {
			t.Fatalf("batches: got %v, want [1 3 3]", got)
		}

		// A follow-up batch that does not reach the size before it goes when Linger
		// has passed.
		chs = append(chs, submit(t.Context(), b, "k", "g")...)
		synctest.Wait()
		start := time.Now()
		rehold(r)
		synctest.Wait()
		if got := r.sizes(); !slices.Equal(got, []int{1, 3, 3}) {
			t.Fatalf("batches while lingering: got %v, want [1 3 3]", got)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if got := r.sizes(); !slices.Equal(got, []int{1, 3, 3, 1}) {
			t.Errorf("batches after Linger (%v): got %v, want [1 3 3 1]", time.Since(start), got)
		}
		close(r.hold)
		for _, ch := range chs {
			if o := <-ch; o.err != nil {
				t.Errorf("Do: %v", o.err)
			}
		}
	})
}

func TestCloseEndsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := coalesce.New(r.fn, coalesce.Options{Max: 8, Linger: time.Hour})
		first := startHeld(t, r, b, "k")
		chs := submit(t.Context(), b, "k", "a", "b")
		synctest.Wait()
		b.Close() // cancels the held call; the queued ones fail too
		for i, ch := range append(chs, first) {
			if o := <-ch; o.err == nil {
				t.Errorf("caller %d: got %q after Close, want an error", i, o.val)
			}
		}
		if _, err := b.Do(t.Context(), "k", "late"); !errors.Is(err, coalesce.ErrClosed) {
			t.Errorf("Do after Close: got %v, want ErrClosed", err)
		}
		b.Close()
		// synctest.Test fails if any goroutine of the bubble is left blocked.
	})
}
