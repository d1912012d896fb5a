package filestore

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. bbolt allows one write transaction at a time and fsyncs each commit,
// so a write's cost is mostly its commit. The committer goroutine takes every write
// queued while the previous commit was running and applies them all in one
// transaction: one commit (two fsyncs) for the whole group, and each caller is
// answered only after it. A lone write goes out at once; under load the groups grow
// by themselves to what arrives during one commit. (bbolt's own db.Batch forms groups
// by a timer instead: measured, it either adds its delay to every write or splits
// concurrent writers into small groups queued on the writer lock.)

// maxGroup bounds how many writes one transaction carries.
const maxGroup = 4096

// writeReq is one queued write and where its outcome goes.
type writeReq struct {
	fn   func(tx *bolt.Tx) error
	done chan error
}

// refusal marks an error a write function returned before it wrote anything (the
// record exists, is missing, is still in use): the group's transaction is unchanged
// and carries on without it.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

// errAllRefused rolls back a group transaction in which every write refused.
var errAllRefused = errors.New("every write of the group refused")

// refuse marks err as a refusal; see refusal.
func refuse(err error) error { return refusal{err} }

// enqueue hands fn to the committer and waits for its outcome. The caller holds mu
// for reading, so Close waits for it.
func (s *Store) enqueue(fn func(tx *bolt.Tx) error) error {
	req := &writeReq{fn: fn, done: make(chan error, 1)}
	s.qmu.Lock()
	s.queue = append(s.queue, req)
	s.qmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the committer has been kicked already and will see req
	}
	err := <-req.done
	if r, ok := errors.AsType[refusal](err); ok {
		return r.err
	}
	return err
}

// committer runs until stop is closed, committing queued writes in groups.
func (s *Store) committer() {
	defer close(s.stopped)
	for {
		select {
		case <-s.kick:
		case <-s.stop:
			return
		}
		last := 0
		for {
			if last > 1 {
				s.linger(last)
			}
			s.qmu.Lock()
			n := min(len(s.queue), maxGroup)
			group := s.queue[:n:n]
			s.queue = s.queue[n:]
			s.qmu.Unlock()
			if n == 0 {
				break
			}
			s.commitGroup(group)
			last = n
		}
	}
}

// lingerStep and maxLinger bound how long the committer waits for writers to come
// back before its next commit; see linger.
const (
	lingerStep = 100 * time.Microsecond
	maxLinger  = time.Millisecond
)

// linger waits, after a group of last writes, while writes keep arriving (each step of
// lingerStep brings a new one) until as many as last are queued, for at most
// maxLinger. The writers a commit answers come back at about the same time; without
// the wait the next commit would leave before them, and concurrent writers would
// settle into two half-size groups taking turns. A lone writer (last == 1) never waits.
func (s *Store) linger(last int) {
	deadline := time.Now().Add(maxLinger)
	prev := -1
	for time.Now().Before(deadline) {
		s.qmu.Lock()
		n := len(s.queue)
		s.qmu.Unlock()
		if n >= last || n == prev {
			return
		}
		prev = n
		time.Sleep(lingerStep)
	}
}

// commitGroup applies group in one transaction and answers each request once the
// commit is durable. A write that fails other than by refusing may have written part
// of its change, so the transaction is rolled back and every write of the group is
// retried in a transaction of its own.
func (s *Store) commitGroup(group []*writeReq) {
	errs := make([]error, len(group))
	err := s.withTx(func(tx *bolt.Tx) error {
		wrote := false
		for i, req := range group {
			errs[i] = req.fn(tx)
			if errs[i] != nil {
				if _, ok := errors.AsType[refusal](errs[i]); !ok {
					return errs[i]
				}
			}
			wrote = wrote || errs[i] == nil
		}
		if !wrote {
			return errAllRefused
		}
		return nil
	})
	if errors.Is(err, errAllRefused) {
		// Every write refused on what earlier commits made durable and wrote nothing:
		// the transaction is rolled back, sparing its commit's fsyncs (an import run
		// again finds every device there).
		err = nil
	}
	if err != nil && len(group) > 1 {
		for _, req := range group {
			s.commitGroup([]*writeReq{req})
		}
		return
	}
	ok := 0
	for i := range group {
		if errs[i] == nil {
			errs[i] = err
		}
		if errs[i] == nil {
			ok++
		}
	}
	if ok > 0 { // counted before anyone is answered, so a caller sees its own write
		s.statsMu.Lock()
		s.commits++
		s.writes += int64(ok)
		s.statsMu.Unlock()
	}
	for i, req := range group {
		req.done <- errs[i]
	}
}

// withTx runs fn in a write transaction and commits it unless fn fails; a panic from
// bbolt on a damaged page is an ErrCorrupt error for the whole group.
func (s *Store) withTx(fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // faults in bbolt's map: see recoverCorrupt
	defer recoverCorrupt(&err)
	defer s.noteSize()
	return s.db.Update(fn)
}

// noteSize records where the file's pages end (a read transaction's view of the
// last commit).
func (s *Store) noteSize() {
	_ = s.db.View(func(tx *bolt.Tx) error {
		s.size.Store(tx.Size())
		return nil
	})
}

// BatchStats reports how many grouped writes (CreateHub, DeleteHub, CreateDevice,
// DeleteDevice, PutSetting) the store has committed and in how many transactions,
// each one commit: writes/commits is the average group size.
func (s *Store) BatchStats() (commits, writes int64) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.commits, s.writes
}

// CommitStats reports what the store's write transactions since Open cost bbolt: pages
// written, time spent writing them and the meta page with their two fsyncs (write),
// and time spent laying out the changed B+tree nodes into pages (spill). Together with
// BatchStats they say where a commit's time goes; zero after Close.
func (s *Store) CommitStats() (pages int64, spill, write time.Duration) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, 0, 0
	}
	st := s.db.Stats().TxStats
	return st.GetWrite(), st.GetSpillTime(), st.GetWriteTime()
}

// stopCommitter ends the committer goroutine; the caller holds mu, so no write is
// queued or in flight.
func (s *Store) stopCommitter() {
	close(s.stop)
	<-s.stopped
	if len(s.queue) > 0 {
		panic(fmt.Sprintf("filestore: %d writes queued at Close", len(s.queue)))
	}
}
