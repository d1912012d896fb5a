package vaultstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/coalesce"
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

// hubChecks holds the recent hub reads and the reads after a write, per hub name.
type hubChecks struct {
	mu   sync.Mutex
	seen map[string]hubSeen
	// reads shares the reads after a write: one in flight per hub, and the callers that
	// come meanwhile share the next one, which starts when it ends.
	reads *coalesce.Batcher[struct{}, hubRecord]
}

type hubSeen struct {
	rec hubRecord
	at  time.Time // monotonic: an age, not a record time
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
	rec, err := s.hubs.reads.Do(ctx, name, struct{}{})
	if err != nil && ctx.Err() != nil {
		return hubRecord{}, fmt.Errorf("read hub %q: %w", name, ctx.Err())
	}
	return rec, err
}

// readHubFor is the coalesce.Func of hubAfter: one read of hub name answers every
// caller queued for it. The read serves many callers, so none of their contexts bounds
// it; WriteTimeout does.
func (s *Store) readHubFor(ctx context.Context, name string, callers []struct{}) ([]coalesce.Result[hubRecord], error) {
	at := time.Now()
	rec, _, err := s.readHub(ctx, s.cfg.WriteTimeout, name)
	if err != nil {
		s.forgetHub(name)
		return nil, err
	}
	s.sawHub(name, rec, at)
	out := make([]coalesce.Result[hubRecord], len(callers))
	for i := range out {
		out[i].Val = rec
	}
	return out, nil
}

// sameHub reports whether a and b are the same hub, not one deleted and re-created
// under the same name in between, as far as a create's decisions go.
func sameHub(a, b *hubRecord) bool {
	return a.CreatedAt.Equal(b.CreatedAt) && a.Transit == b.Transit && a.Mode == b.Mode
}

// errHubReplaced fails a create whose hub was deleted and re-created while it ran.
var errHubReplaced = fmt.Errorf("the hub was deleted and re-created meanwhile; try again: %w", store.ErrConflict)
