// Package coalesce merges concurrent calls that share a key into batched calls.
//
// The pattern is the adaptive one: at most one call per key is in flight. A call
// arriving for an idle key goes out at once, alone, so an idle service pays no added
// latency. Calls arriving while one is in flight queue up and go out together, as the
// next batch, as soon as it returns (optionally after a bounded linger until as many
// are queued as the batch before it carried).
// So the batch size follows the load: one at low load, up to Max under pressure.
//
// A batch runs on a goroutine of its own under a context derived from the Batcher's,
// not from any caller's: a caller that gives up returns at once with its context's
// error and takes nothing away from the others in the same batch.
package coalesce

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrClosed is what Do returns once Close has been called.
var ErrClosed = errors.New("coalesce: batcher is closed")

// Result is the outcome of one item of a batch.
type Result[Out any] struct {
	Val Out
	Err error
}

// Func performs one batched call for key: it returns one Result per item of in, in the
// same order, or an error that fails every item of the batch.
type Func[In, Out any] func(ctx context.Context, key string, in []In) ([]Result[Out], error)

// Options bound the batches.
type Options struct {
	// Max is the largest batch (items per call); Max <= 1 disables batching: every Do
	// is a call of its own, concurrent ones included.
	Max int
	// Linger bounds how long a follow-up batch may wait for more items. It waits
	// until as many are queued as the batch before it carried, the best estimate of
	// how many arrive while one call runs; waiting for Max instead would, under a
	// load of fewer concurrent callers than Max, make every follow-up batch wait out
	// the whole Linger while the callee idles. Zero (the default) sends it at once.
	// A call to an idle key never lingers.
	Linger time.Duration
	// FailQueued, when set, says which batch errors mean an outage. When two batches
	// of a key in a row fail so, the items still queued behind the second fail at
	// once with its error: during an outage each caller waits for at most two failed
	// calls, not one per batch of the backlog in front of it, while one slow call alone
	// fails only its own batch. The next item after that goes out as a fresh call.
	FailQueued func(error) bool
}

// Batcher coalesces concurrent Do calls with the same key. Create it with New.
type Batcher[In, Out any] struct {
	fn     Func[In, Out]
	opts   Options
	base   context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	keys   map[string]*queue[In, Out]
	closed bool
	wg     sync.WaitGroup
}

type item[In, Out any] struct {
	ctx  context.Context
	in   In
	done chan Result[Out] // capacity 1: delivering never blocks, whether or not the caller still waits
}

// queue holds the items waiting for key while its worker runs.
type queue[In, Out any] struct {
	items []*item[In, Out]
	more  chan struct{} // signalled (non-blocking) when an item is added; used while lingering
}

// New returns a Batcher calling fn. Close it to stop its workers.
func New[In, Out any](fn Func[In, Out], opts Options) *Batcher[In, Out] {
	base, cancel := context.WithCancel(context.Background())
	return &Batcher[In, Out]{fn: fn, opts: opts, base: base, cancel: cancel, keys: map[string]*queue[In, Out]{}}
}

// Do submits in under key and waits for its result: the item's own Result, the
// batch's error when the whole call failed, ctx's error when ctx ends first (the batch
// still completes for the others), or ErrClosed.
func (b *Batcher[In, Out]) Do(ctx context.Context, key string, in In) (Out, error) {
	var zero Out
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if b.opts.Max <= 1 {
		return b.single(ctx, key, in)
	}
	it := &item[In, Out]{ctx: ctx, in: in, done: make(chan Result[Out], 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return zero, ErrClosed
	}
	q, busy := b.keys[key]
	if !busy {
		q = &queue[In, Out]{more: make(chan struct{}, 1)}
		b.keys[key] = q
	}
	q.items = append(q.items, it)
	if busy {
		select {
		case q.more <- struct{}{}:
		default:
		}
	} else {
		b.wg.Add(1)
		go b.work(key, q)
	}
	b.mu.Unlock()

	select {
	case r := <-it.done:
		return r.Val, r.Err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// single is Do without batching: one call per item, still under the Batcher's
// context so Close ends it, and still returning early when ctx ends.
func (b *Batcher[In, Out]) single(ctx context.Context, key string, in In) (Out, error) {
	var zero Out
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return zero, ErrClosed
	}
	b.wg.Add(1)
	b.mu.Unlock()
	done := make(chan Result[Out], 1)
	go func() {
		defer b.wg.Done()
		done <- one(b.call(key, []In{in}))
	}()
	select {
	case r := <-done:
		return r.Val, r.Err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func one[Out any](rs []Result[Out], err error) Result[Out] {
	if err != nil {
		return Result[Out]{Err: err}
	}
	return rs[0]
}

// errShortAnswer is a batch whose Func returned fewer results than items: a bug in
// the Func, reported per item rather than panicking.
var errShortAnswer = errors.New("coalesce: batch answered fewer results than items")

// call runs fn under the Batcher's context, so one caller's cancellation never
// reaches it; fn bounds the call with its own deadline.
func (b *Batcher[In, Out]) call(key string, in []In) ([]Result[Out], error) {
	rs, err := b.fn(b.base, key, in)
	if err == nil && len(rs) != len(in) {
		return nil, errShortAnswer
	}
	return rs, err
}

// work sends q's items in batches of at most Max until q is empty, then retires the
// queue. Exactly one worker runs per key at a time.
func (b *Batcher[In, Out]) work(key string, q *queue[In, Out]) {
	defer b.wg.Done()
	last, failing := 0, false // last: the size of the batch that just returned
	for {
		if last > 0 && b.opts.Linger > 0 {
			b.linger(q, last)
		}
		batch := b.take(key, q)
		if batch == nil {
			return
		}
		in := make([]In, len(batch))
		for i, it := range batch {
			in[i] = it.in
		}
		last = len(batch)
		rs, err := b.call(key, in)
		outage := err != nil && b.opts.FailQueued != nil && b.opts.FailQueued(err)
		if outage && failing {
			batch = append(batch, b.drain(q)...)
		}
		failing = outage
		idle := b.retire(key, q)
		for i, it := range batch {
			if err != nil {
				it.done <- Result[Out]{Err: err}
			} else {
				it.done <- rs[i]
			}
		}
		if idle {
			return
		}
	}
}

// retire ends key's worker when nothing queued behind the call that just returned: the
// key is idle again before its callers have their results, so their next calls start a
// worker of their own and go out at once instead of lingering behind this one.
func (b *Batcher[In, Out]) retire(key string, q *queue[In, Out]) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(q.items) > 0 {
		return false
	}
	delete(b.keys, key)
	return true
}

// drain removes every item queued in q and returns them.
func (b *Batcher[In, Out]) drain(q *queue[In, Out]) []*item[In, Out] {
	b.mu.Lock()
	defer b.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// take removes up to Max live items from q (dropping those whose callers gave up
// while they waited). With none left it retires q and returns nil; later Do calls for
// key start a new worker.
func (b *Batcher[In, Out]) take(key string, q *queue[In, Out]) []*item[In, Out] {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch []*item[In, Out]
	n := 0
	for n < len(q.items) && len(batch) < b.opts.Max {
		it := q.items[n]
		n++
		if it.ctx.Err() != nil {
			continue // its caller has returned already
		}
		batch = append(batch, it)
	}
	clear(q.items[:n])
	q.items = q.items[n:]
	if len(batch) == 0 {
		delete(b.keys, key)
		return nil
	}
	return batch
}

// linger waits up to Linger for q to hold want items, or for Close. It returns at once
// when q is empty (nothing to wait for) or holds want already.
func (b *Batcher[In, Out]) linger(q *queue[In, Out], want int) {
	t := time.NewTimer(b.opts.Linger)
	defer t.Stop()
	for {
		b.mu.Lock()
		n := len(q.items)
		b.mu.Unlock()
		if n == 0 || n >= want {
			return
		}
		select {
		case <-q.more:
		case <-t.C:
			return
		case <-b.base.Done():
			return
		}
	}
}

// Pending reports how many items wait for key behind the call in flight (for tests
// and metrics); 0 when key is idle.
func (b *Batcher[In, Out]) Pending(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.keys[key]; q != nil {
		return len(q.items)
	}
	return 0
}

// Close stops accepting calls, cancels the context of the calls in flight and waits
// for every worker to end; callers still waiting get their batch's outcome (usually
// the cancellation). Close may be called more than once.
func (b *Batcher[In, Out]) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}
