package storm

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// params are what one storm against one target needs.
type params struct {
	name     string
	url      string // full URL of the token endpoint
	workers  int
	audience string
	deadline time.Duration // the storm gives up on unserved devices after this long
	maxWait  time.Duration // longest Retry-After honoured
	timeout  time.Duration // per exchange
	now      func() time.Time
	// bodies are the devices' POST /token/certificate bodies; nil for GET /token.
	bodies []string
}

// Result is one storm against one target; also the -json form.
type Result struct {
	Name       string        `json:"name"`
	Target     string        `json:"target"`
	Devices    int           `json:"devices"`
	Workers    int           `json:"workers"`
	Served     int           `json:"served"`
	Failed     int           `json:"failed"`     // devices whose exchange ended in an error
	Unfinished int           `json:"unfinished"` // devices neither served nor failed at the deadline
	Elapsed    bench.Seconds `json:"elapsedSeconds"`
	Throughput float64       `json:"devicesPerSecond"`
	// Exchange latency: one successful exchange, dial and TLS handshake included.
	P50 bench.Millis `json:"p50Ms"`
	P95 bench.Millis `json:"p95Ms"`
	P99 bench.Millis `json:"p99Ms"`
	Max bench.Millis `json:"maxMs"`
	// Device completion: from a device's first attempt to its token, Retry-After waits
	// and retries included.
	DeviceP50   bench.Millis   `json:"deviceP50Ms"`
	DeviceP99   bench.Millis   `json:"deviceP99Ms"`
	DeviceMax   bench.Millis   `json:"deviceMaxMs"`
	Attempts    int            `json:"attempts"`
	Refusals    map[string]int `json:"refusals"`
	Errors      map[string]int `json:"errors"`
	Connections int            `json:"connections"` // TCP connections dialled
	Resumed     int            `json:"resumedSessions"`
	// CPU per served device: this process (the generator), and the target's process.
	ClientCPUPerDevice bench.Micros `json:"clientCpuUsPerDevice"`
	ServerCPUPerDevice bench.Micros `json:"serverCpuUsPerDevice,omitempty"`
	ServerPeakRSS      int64        `json:"serverPeakRssBytes,omitempty"`
	// StoreReads are the target's store-read counters over the storm (absent: n/a).
	StoreReads  map[string]float64 `json:"storeReads,omitempty"`
	Interrupted bool               `json:"interrupted,omitempty"`
}

// worker is one worker's private counts beyond the phase runner's tally.
type worker struct {
	id       string          // worker ID, part of every jti it makes
	seq      uint64          // assertions signed by this worker
	done     []time.Duration // device completion times of served devices
	attempts int
	resumed  int
	failed   int
	served   int
	last     time.Time // when this worker's last device finished
}

// queue hands devices to workers: each device once, then again after a refusal's
// Retry-After. It is finished when every device has been served or has failed.
type queue struct {
	n       int
	next    atomic.Int64
	retry   chan int // devices whose Retry-After has passed
	pending atomic.Int64
	done    chan struct{}
	once    sync.Once
}

func newQueue(n int) *queue {
	q := &queue{n: n, retry: make(chan int, n), done: make(chan struct{})}
	q.pending.Store(int64(n))
	return q
}

// take returns the next device to try: a retry that is due, else a fresh device, else
// it waits for a retry; false when the storm is over or ctx ended.
func (q *queue) take(ctx context.Context) (int, bool) {
	select {
	case i := <-q.retry:
		return i, true
	default:
	}
	if i := q.next.Add(1) - 1; i < int64(q.n) {
		return int(i), true
	}
	select {
	case i := <-q.retry:
		return i, true
	case <-q.done:
	case <-ctx.Done():
	}
	return 0, false
}

// later queues device i again after d. The channel has room for every device, so the
// timer never blocks.
func (q *queue) later(i int, d time.Duration) {
	time.AfterFunc(d, func() { q.retry <- i })
}

// finish marks one device served or failed.
func (q *queue) finish() {
	if q.pending.Add(-1) == 0 {
		q.once.Do(func() { close(q.done) })
	}
}

// runStorm lets every device in devs fetch one token from p.url over a new connection
// per exchange (client must not keep connections alive), p.workers at a time, through
// the phase runner, honouring Retry-After on refusals by queueing the device again (a
// new assertion per attempt) while the worker moves on. It returns when every device
// is served or failed, at p.deadline, or when ctx ends.
func runStorm(ctx context.Context, client *http.Client, p params, devs []bench.KeyDevice) Result {
	if p.now == nil {
		p.now = time.Now
	}
	ctx, cancel := context.WithTimeout(ctx, p.deadline)
	defer cancel()
	q := newQueue(len(devs))
	first := make([]time.Time, len(devs)) // each written by one worker at a time
	workers := make([]*worker, p.workers)
	start := p.now()
	runID := strconv.FormatInt(start.UnixNano(), 36)
	phase := bench.Phase{Name: p.name, URL: p.url, Workers: p.workers, Duration: p.deadline, MaxWait: p.maxWait, Timeout: p.timeout}
	br := bench.RunWorkers(ctx, phase, func(w int) bench.AttemptFunc {
		wk := &worker{id: runID + "-" + strconv.Itoa(w) + "-", last: start}
		workers[w] = wk
		return func(ctx context.Context) (bench.Outcome, bool) {
			i, ok := q.take(ctx)
			if !ok {
				return bench.Outcome{}, false
			}
			return wk.attempt(ctx, client, p, q, devs, first, i), true
		}
	})
	r := summarize(p, len(devs), start, br, workers)
	r.Interrupted = ctx.Err() != nil && q.pending.Load() > 0
	return r
}

// attempt is one attempt of device i: a fresh assertion, one exchange, and what
// follows from its outcome. A refusal queues the device again, so the outcome goes
// back to the runner without a wait.
func (wk *worker) attempt(ctx context.Context, client *http.Client, p params, q *queue, devs []bench.KeyDevice, first []time.Time, i int) bench.Outcome {
	now := p.now()
	if first[i].IsZero() {
		first[i] = now
	}
	wk.attempts++
	wk.seq++
	assertion, err := devs[i].Sign(p.audience, wk.id, wk.seq, now)
	if err != nil {
		wk.failed++
		q.finish()
		return bench.Outcome{Kind: bench.OutcomeError, Key: "sign"}
	}
	var o bench.Outcome
	if p.bodies != nil {
		o = tryCertificate(ctx, client, p, assertion, p.bodies[i])
	} else {
		o = bench.TryToken(ctx, client, p.url, p.timeout, assertion)
	}
	if o.Resumed {
		wk.resumed++
	}
	switch o.Kind {
	case bench.OutcomeOK:
		wk.served++
		wk.last = p.now()
		wk.done = append(wk.done, wk.last.Sub(first[i]))
		q.finish()
	case bench.OutcomeRefused:
		q.later(i, min(o.Wait, p.maxWait))
		o.Wait = 0
	case bench.OutcomeError:
		wk.failed++
		wk.last = p.now()
		q.finish()
	case bench.OutcomeCanceled:
		wk.attempts-- // the run ended; nothing was decided
	}
	return o
}

// summarize adds the workers' device counts to what the phase runner measured.
func summarize(p params, devices int, start time.Time, br bench.Result, workers []*worker) Result {
	r := Result{Name: p.name, Target: p.url, Devices: devices, Workers: p.workers, Refusals: br.Refusals, Errors: br.Errors,
		P50: br.P50, P95: br.P95, P99: br.P99, Max: br.Max}
	var done []time.Duration
	last := start
	for _, w := range workers {
		done = append(done, w.done...)
		r.Attempts += w.attempts
		r.Resumed += w.resumed
		r.Served += w.served
		r.Failed += w.failed
		if w.last.After(last) {
			last = w.last
		}
	}
	r.Unfinished = devices - r.Served - r.Failed
	elapsed := last.Sub(start)
	if r.Unfinished > 0 {
		elapsed = p.now().Sub(start)
	}
	r.Elapsed = bench.Seconds(elapsed)
	if elapsed > 0 {
		r.Throughput = float64(r.Served) / elapsed.Seconds()
	}
	slices.Sort(done)
	r.DeviceP50, r.DeviceP99 = bench.Millis(bench.Percentile(done, 50)), bench.Millis(bench.Percentile(done, 99))
	if len(done) > 0 {
		r.DeviceMax = bench.Millis(done[len(done)-1])
	}
	return r
}
