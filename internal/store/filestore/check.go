package filestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/store"
)

// Check verifies the store against its invariants and reports every inconsistency:
// bbolt's own page check (no page lost or used twice), every value authenticates and
// decodes under the key it is stored at, each record names itself, every device's
// hub exists, and the indexes (devices per hub, the parent index) match the records
// exactly. A commit is all or nothing, so a crash leaves no leftovers to report.
//
// Check reads one consistent snapshot in a read transaction: writes go on meanwhile.
// It reads the whole file, so it takes time in proportion to it (an operator's walk,
// not a request-path call). It returns ErrClosed after Close; inconsistencies are in
// the report, never the error.
func (s *Store) Check(ctx context.Context) (store.Report, error) {
	var rep store.Report
	if fi, err := os.Stat(s.path); err != nil {
		return store.Report{}, fmt.Errorf("check: %w", err)
	} else if want := s.size.Load(); fi.Size() < want {
		// Reading pages the file no longer has through the map would kill the process.
		rep.Problemf(fmt.Sprintf("file %s", s.path), "is %d bytes, but its pages end at %d: cut short behind the store's back", fi.Size(), want)
		return rep, nil
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		// The checks below read every other bucket whole; the meta bucket is read here
		// only so that all pages have been reached before bbolt's own check (below).
		_ = tx.Bucket(bucketMeta).ForEach(func(_, _ []byte) error { return nil })
		hubs := s.checkHubs(tx, &rep)
		counts, parents := s.checkDevices(tx, hubs, &rep)
		checkHubCounts(tx, counts, &rep)
		checkChildren(tx, parents, &rep)
		_ = tx.Bucket(bucketSettings).ForEach(func(k, v []byte) error {
			if pt, err := s.sl.open(bucketSettings, k, v); err != nil {
				rep.Problemf(fmt.Sprintf("setting %q", k), "%v", err)
			} else {
				clear(pt)
			}
			return nil
		})
		// bbolt's own check walks the pages again on a goroutine of its own, where a
		// fault on a damaged page pointer would end the process: the walks above ran on
		// this goroutine (faults trapped, see view) through every bucket, so such a
		// pointer has already made this Check an ErrCorrupt error.
		for err := range tx.Check() {
			rep.Problemf(fmt.Sprintf("file %s", s.path), "%v", err)
		}
		return nil
	})
	if err != nil {
		return store.Report{}, fmt.Errorf("check: %w", err)
	}
	return rep, nil
}

// checkHubs checks every hub record and returns the set of hub names.
func (s *Store) checkHubs(tx *bolt.Tx, rep *store.Report) map[string]bool {
	hubs := map[string]bool{}
	_ = tx.Bucket(bucketHubs).ForEach(func(k, v []byte) error {
		rep.Hubs++
		hubs[string(k)] = true
		what := fmt.Sprintf("hub %q", k)
		h, err := s.sl.openHub(k, v)
		switch {
		case err != nil:
			rep.Problemf(what, "%v", err)
		case h.Name != string(k):
			rep.Problemf(what, "the record names hub %q", h.Name)
		}
		return nil
	})
	return hubs
}

// checkDevices checks every device record and returns the devices per hub and each
// child's parent, as the records say.
func (s *Store) checkDevices(tx *bolt.Tx, hubs map[string]bool, rep *store.Report) (map[string]uint64, map[string]string) {
	counts := map[string]uint64{}
	parents := map[string]string{} // child ID -> parent ID; children are few
	_ = tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
		rep.Devices++
		what := fmt.Sprintf("device %q", k)
		d, err := s.sl.openDevice(k, v)
		if err != nil {
			rep.Problemf(what, "%v", err)
			return nil
		}
		if d.ID != string(k) {
			rep.Problemf(what, "the record names device %q", d.ID)
		}
		if !hubs[d.Hub] {
			rep.Problemf(what, "its hub %q does not exist", d.Hub)
		}
		counts[d.Hub]++
		if d.Parent != "" {
			parents[d.ID] = d.Parent
		}
		return nil
	})
	return counts, parents
}

// checkHubCounts compares the stored devices-per-hub counts with the records'.
func checkHubCounts(tx *bolt.Tx, counts map[string]uint64, rep *store.Report) {
	stored := map[string]uint64{}
	_ = tx.Bucket(bucketHubCount).ForEach(func(k, v []byte) error {
		if len(v) != 8 {
			rep.Problemf(fmt.Sprintf("hub %q", k), "device count is %d bytes, want 8", len(v))
			return nil
		}
		stored[string(k)] = binary.BigEndian.Uint64(v)
		return nil
	})
	for _, hub := range unionKeys(counts, stored) {
		if counts[hub] != stored[hub] {
			rep.Problemf(fmt.Sprintf("hub %q", hub), "counted as used by %d devices, but %d are", stored[hub], counts[hub])
		}
	}
}

// checkChildren compares the parent index with the records' Parent fields.
func checkChildren(tx *bolt.Tx, parents map[string]string, rep *store.Report) {
	indexed := map[string]string{}
	_ = tx.Bucket(bucketChildren).ForEach(func(parent, v []byte) error {
		b := tx.Bucket(bucketChildren).Bucket(parent)
		if v != nil || b == nil {
			rep.Problemf(fmt.Sprintf("parent index %q", parent), "is a value, not a bucket")
			return nil
		}
		n := 0
		_ = b.ForEach(func(child, _ []byte) error {
			n++
			indexed[string(child)] = string(parent)
			return nil
		})
		if n == 0 {
			rep.Problemf(fmt.Sprintf("parent index %q", parent), "is empty")
		}
		return nil
	})
	for _, id := range unionKeys(parents, indexed) {
		if parents[id] != indexed[id] {
			rep.Problemf(fmt.Sprintf("device %q", id), "names parent %q, but the parent index files it under %q", parents[id], indexed[id])
		}
	}
}

func unionKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
