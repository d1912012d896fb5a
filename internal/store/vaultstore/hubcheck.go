package vaultstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/store"
)

// The two hub reads of a CreateDevice, made cheap for bulk imports. Before writing,
// a create needs to know what the hub is (absent, being deleted, keeping device keys in
// Transit); after writing its record it must read the hub again, from Vault, to learn
// whether a DeleteHub marked it meanwhile (see createDevice). Read one after the other
// for every device they were two of a create's five Vault calls.
//
//   - The first read may be a recent one (hubSeenTTL): it only decides how to write,
//     and the read after the write is the one that counts. A stale answer costs a
//     rollback, never a device on a hub that went away; a hub replaced meanwhile by
//     another of the same name (another creation time, Transit or mode) fails the
//     create as a conflict.
//   - The read after the write must start after the write finished; creates whose
//     writes finish while one such read is in flight share the next one, so many
//     concurrent creates on one hub need about one read per round trip, not one each.

// hubSeenTTL is how long a hub read may stand in for the read before a create.
var hubSeenTTL = time.Second

// hubChecks holds the recent hub reads and the reads in flight, per hub name.
type hubChecks struct {
	mu    sync.Mutex
	seen  map[string]hubSeen
	reads map[string]*hubRead
}

type hubSeen struct {
	rec hubRecord
	at  time.Time // monotonic: an age, not a record time
}

// hubRead is one read of a hub shared by its waiters; next is the read queued to start
// when this one ends, for the callers that came while it was in flight.
type hubRead struct {
	done chan struct{}
	rec  hubRecord
	err  error
	next *hubRead
}

// recentHub returns the hub record as read at most hubSeenTTL ago, reading it if need be.
func (s *Store) recentHub(ctx context.Context, name string) (hubRecord, error) {
	hc := &s.hubs
	hc.mu.Lock()
	seen, ok := hc.seen[name]
	hc.mu.Unlock()
	if ok && time.Since(seen.at) < hubSeenTTL {
		return seen.rec, nil
	}
	rec, _, err := s.readHub(ctx, s.cfg.WriteTimeout, name)
	if err == nil {
		s.sawHub(name, rec, time.Now())
	}
	return rec, err
}

// sawHub remembers rec, read at at, unless a later read is remembered already.
func (s *Store) sawHub(name string, rec hubRecord, at time.Time) {
	hc := &s.hubs
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.seen == nil {
		hc.seen = map[string]hubSeen{}
	}
	if cur, ok := hc.seen[name]; !ok || cur.at.Before(at) {
		hc.seen[name] = hubSeen{rec: rec, at: at}
	}
}

// forgetHub drops the remembered read of name, after the hub changed or went away.
func (s *Store) forgetHub(name string) {
	hc := &s.hubs
	hc.mu.Lock()
	delete(hc.seen, name)
	hc.mu.Unlock()
}

// hubAfter returns the hub record from a Vault read that started after hubAfter was
// called; store.ErrNotFound if the hub is absent.
func (s *Store) hubAfter(ctx context.Context, name string) (hubRecord, error) {
	hc := &s.hubs
	hc.mu.Lock()
	if hc.reads == nil {
		hc.reads = map[string]*hubRead{}
	}
	var r *hubRead
	cur := hc.reads[name]
	if cur == nil {
		r = &hubRead{done: make(chan struct{})}
		hc.reads[name] = r
		go s.runHubReads(name, r)
	} else {
		// cur started before this call: wait for the read queued after it.
		if cur.next == nil {
			cur.next = &hubRead{done: make(chan struct{})}
		}
		r = cur.next
	}
	hc.mu.Unlock()
	select {
	case <-r.done:
		return r.rec, r.err
	case <-ctx.Done():
		return hubRecord{}, fmt.Errorf("read hub %q: %w", name, ctx.Err())
	}
}

// runHubReads performs r, then each read queued after it, until none is. The reads
// serve many callers, so none of their contexts bounds them; WriteTimeout does.
func (s *Store) runHubReads(name string, r *hubRead) {
	hc := &s.hubs
	for r != nil {
		at := time.Now()
		r.rec, _, r.err = s.readHub(context.Background(), s.cfg.WriteTimeout, name)
		hc.mu.Lock()
		next := r.next
		if next == nil {
			delete(hc.reads, name)
		} else {
			hc.reads[name] = next
		}
		hc.mu.Unlock()
		if r.err == nil {
			s.sawHub(name, r.rec, at)
		} else {
			s.forgetHub(name)
		}
		close(r.done)
		r = next
	}
}

// sameHub reports whether a and b are the same hub, not one deleted and re-created
// under the same name in between, as far as a create's decisions go.
func sameHub(a, b *hubRecord) bool {
	return a.CreatedAt.Equal(b.CreatedAt) && a.Transit == b.Transit && a.Mode == b.Mode
}

// errHubReplaced fails a create whose hub was deleted and re-created while it ran.
var errHubReplaced = fmt.Errorf("the hub was deleted and re-created meanwhile; try again: %w", store.ErrConflict)
