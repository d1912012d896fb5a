// Package queue is the gateway's bounded on-disk queue between intake and upstream: a
// message a leaf handed over is written to a bbolt file (and synced) before the intake
// acknowledges it, and deleted only when the hub has accepted it. An agent restart or an
// upstream outage therefore loses nothing up to the limit; beyond the limit the oldest
// messages are dropped, counted and logged.
//
// One writer goroutine commits every pending put and acknowledgement in one
// transaction, so concurrent leaves share each fsync (group commit).
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// ErrClosed is returned by Put after Close.
var ErrClosed = errors.New("queue closed")

var bucket = []byte("messages")

// Options configure a Queue.
type Options struct {
	// Path is the bbolt file (created 0600).
	Path string
	// Limit is the most messages kept; MaxBytes the most bytes of encoded messages
	// (0: no byte bound). Beyond either, the oldest are dropped.
	Limit    int
	MaxBytes int64
	Now      func() time.Time
	Logger   *slog.Logger
}

// Record is one queued message.
type Record struct {
	Seq  uint64
	Leaf string
	telemetry.Message
}

// Stats count what a Queue did.
type Stats struct {
	// Accepted counts messages written; Acked those the hub accepted; Dropped the
	// oldest messages removed because the queue was full; Pending what is queued now.
	Accepted, Acked, Dropped, Pending int
	// PendingBytes is the encoded size of what is queued now.
	PendingBytes int64
}

type put struct {
	seq  uint64
	leaf string
	val  []byte
	done chan error
}

type leafQ struct {
	seqs []uint64
	wake chan struct{} // closed when seqs gains an entry
}

// Queue is the gateway's message queue. It is safe for concurrent use.
type Queue struct {
	o   Options
	db  *bolt.DB
	log *slog.Logger

	mu      sync.Mutex
	next    uint64
	count   int
	bytes   int64
	leaves  map[string]*leafQ
	puts    []put
	acks    []uint64
	kick    chan struct{}
	closed  bool
	stopped chan struct{}

	onPut atomic.Pointer[func(leaf string)]

	stats     counter.Set[Stats]
	lastLog   time.Time
	unlogged  int
	logPeriod time.Duration
}

// Open opens (or creates) the queue file and loads what an earlier run left in it.
func Open(o Options) (*Queue, error) {
	if o.Limit <= 0 {
		return nil, errors.New("queue: limit must be positive")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	db, err := bolt.Open(o.Path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", o.Path, err)
	}
	q := &Queue{o: o, db: db, log: o.Logger, leaves: map[string]*leafQ{}, kick: make(chan struct{}, 1),
		stopped: make(chan struct{}), next: 1, logPeriod: 10 * time.Second}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			leaf, _, err := decode(v)
			if err != nil || len(k) != 8 {
				q.log.Error("queue: unreadable record skipped", "error", fmt.Sprint(err))
				return nil
			}
			seq := binary.BigEndian.Uint64(k)
			q.leaf(leaf).seqs = append(q.leaf(leaf).seqs, seq)
			q.count++
			q.bytes += int64(len(v))
			q.next = seq + 1
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("queue %s: %w", o.Path, err)
	}
	q.stats.Update(func(s *Stats) { s.Pending, s.PendingBytes = q.count, q.bytes })
	if q.count > 0 {
		q.log.Info("queue: messages kept from an earlier run", "pending", q.count, "leaves", len(q.leaves))
	}
	go q.writer()
	return q, nil
}

// Stats returns a snapshot of the counters.
func (q *Queue) Stats() Stats { return q.stats.Snapshot() }

// Close stops the writer after its last commit and closes the file. Puts waiting for a
// commit get their result; later ones get ErrClosed.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.signal()
	<-q.stopped
	return q.db.Close()
}

// Put writes m for leaf and returns once it is on disk; only then may the intake
// acknowledge it.
func (q *Queue) Put(leaf string, m telemetry.Message) error {
	done := make(chan error, 1)
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.puts = append(q.puts, put{seq: q.next, leaf: leaf, val: encode(leaf, m), done: done})
	q.next++
	q.mu.Unlock()
	q.signal()
	return <-done
}

// Head returns leaf's oldest queued message, waiting for one until ctx ends. It stays
// queued until Ack.
func (q *Queue) Head(ctx context.Context, leaf string) (Record, error) {
	for {
		r, ok, wake, err := q.peek(leaf)
		if err != nil || ok {
			return r, err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
}

// Peek returns leaf's oldest queued message without waiting (ok false when there is
// none). It stays queued until Ack.
func (q *Queue) Peek(leaf string) (r Record, ok bool, err error) {
	r, ok, _, err = q.peek(leaf)
	return r, ok, err
}

// OnPut makes fn be called after each commit with every leaf that gained a message
// (once per leaf and commit; from the queue's writer, so fn must not block). A later
// call replaces fn.
func (q *Queue) OnPut(fn func(leaf string)) { q.onPut.Store(&fn) }

// peek returns leaf's oldest message, or a channel closed when it gains one.
func (q *Queue) peek(leaf string) (Record, bool, <-chan struct{}, error) {
	for {
		q.mu.Lock()
		lq := q.leaf(leaf)
		var seq uint64
		if len(lq.seqs) > 0 {
			seq = lq.seqs[0]
		}
		wake := lq.wake
		q.mu.Unlock()
		if seq == 0 {
			return Record{}, false, wake, nil
		}
		r, ok, err := q.read(seq)
		if err != nil || ok {
			return r, ok, nil, err
		}
		q.forget(leaf, seq) // dropped meanwhile
	}
}

// Has reports whether message seq of leaf is still queued (neither acknowledged nor
// dropped).
func (q *Queue) Has(leaf string, seq uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	lq, ok := q.leaves[leaf]
	return ok && slices.Contains(lq.seqs, seq)
}

// Ack removes the message seq of leaf: the hub accepted it. Acknowledging a message
// that was dropped meanwhile does nothing.
func (q *Queue) Ack(leaf string, seq uint64) {
	q.mu.Lock()
	q.forgetLocked(leaf, seq)
	q.acks = append(q.acks, seq)
	q.mu.Unlock()
	q.signal()
}

func (q *Queue) read(seq uint64) (r Record, ok bool, err error) {
	err = q.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get(key(seq))
		if v == nil {
			return nil
		}
		leaf, m, err := decode(v)
		if err != nil {
			return err
		}
		r, ok = Record{Seq: seq, Leaf: leaf, Message: m}, true
		return nil
	})
	return r, ok, err
}

func (q *Queue) leaf(id string) *leafQ {
	lq, ok := q.leaves[id]
	if !ok {
		lq = &leafQ{wake: make(chan struct{})}
		q.leaves[id] = lq
	}
	return lq
}

func (q *Queue) forget(leaf string, seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgetLocked(leaf, seq)
}

func (q *Queue) forgetLocked(leaf string, seq uint64) {
	lq := q.leaf(leaf)
	if i := slices.Index(lq.seqs, seq); i >= 0 {
		lq.seqs = slices.Delete(lq.seqs, i, i+1)
	}
}

func (q *Queue) signal() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// writer commits pending acks and puts, one transaction per round, until Close.
func (q *Queue) writer() {
	defer close(q.stopped)
	for {
		<-q.kick
		q.mu.Lock()
		puts, acks, closed := q.puts, q.acks, q.closed
		q.puts, q.acks = nil, nil
		q.mu.Unlock()
		if len(puts)+len(acks) > 0 {
			q.commit(puts, acks)
		}
		if closed {
			q.mu.Lock()
			rest := len(q.puts) + len(q.acks)
			q.mu.Unlock()
			if rest == 0 {
				if q.unlogged > 0 {
					q.lastLog = time.Time{}
					q.logDrops(0, "")
				}
				return
			}
			q.signal()
		}
	}
}

type dropped struct {
	seq  uint64
	leaf string
}

func (q *Queue) commit(puts []put, acks []uint64) {
	var (
		acked int
		drops []dropped
	)
	count, size := q.snapshot()
	err := q.db.Update(func(tx *bolt.Tx) error {
		acked, drops = 0, nil
		count, size = q.snapshot()
		b := tx.Bucket(bucket)
		// Acks first: a message the hub accepted is never counted as dropped.
		for _, seq := range acks {
			k := key(seq)
			if v := b.Get(k); v != nil {
				size -= int64(len(v))
				count--
				acked++
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		for _, p := range puts {
			if err := b.Put(key(p.seq), p.val); err != nil {
				return err
			}
			count++
			size += int64(len(p.val))
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil && (count > q.o.Limit || (q.o.MaxBytes > 0 && size > q.o.MaxBytes)); k, v = c.First() {
			leaf, _, _ := decode(v)
			drops = append(drops, dropped{seq: binary.BigEndian.Uint64(k), leaf: leaf})
			count--
			size -= int64(len(v))
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		q.log.Error("queue: commit failed", "error", err.Error(), "puts", len(puts), "acks", len(acks))
		for _, p := range puts {
			p.done <- fmt.Errorf("queue: %w", err)
		}
		// The acks are lost with this transaction: those messages are sent again.
		return
	}
	q.mu.Lock()
	q.count, q.bytes = count, size
	for _, p := range puts {
		lq := q.leaf(p.leaf)
		lq.seqs = append(lq.seqs, p.seq)
		if n := len(lq.seqs); n > 1 && lq.seqs[n-2] > p.seq {
			slices.Sort(lq.seqs)
		}
		close(lq.wake)
		lq.wake = make(chan struct{})
	}
	for _, d := range drops {
		q.forgetLocked(d.leaf, d.seq)
	}
	q.mu.Unlock()
	q.stats.Update(func(s *Stats) {
		s.Accepted += len(puts)
		s.Acked += acked
		s.Dropped += len(drops)
		s.Pending, s.PendingBytes = count, size
	})
	for _, p := range puts {
		p.done <- nil
	}
	if fn := q.onPut.Load(); fn != nil {
		seen := make(map[string]bool, len(puts))
		for _, p := range puts {
			if !seen[p.leaf] {
				seen[p.leaf] = true
				(*fn)(p.leaf)
			}
		}
	}
	if len(drops) > 0 {
		q.logDrops(len(drops), drops[0].leaf)
	}
}

func (q *Queue) snapshot() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count, q.bytes
}

// logDrops logs dropped messages at once, then at most once per logPeriod with the
// number dropped since the last line: counted and logged, never silently, but never
// a line per message either.
func (q *Queue) logDrops(n int, leaf string) {
	q.unlogged += n
	now := q.o.Now()
	if !q.lastLog.IsZero() && now.Sub(q.lastLog) < q.logPeriod {
		return
	}
	q.log.Warn("queue full: oldest messages dropped", "dropped", q.unlogged, "droppedTotal", q.Stats().Dropped,
		"limit", q.o.Limit, "maxBytes", q.o.MaxBytes, "exampleLeaf", leaf)
	q.lastLog, q.unlogged = now, 0
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}
