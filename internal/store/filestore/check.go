package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/tokensvc/tokensvc/internal/store"
)

// Check verifies the store against its invariants and reports every inconsistency.
//
// In memory: each record is filed under its own name, every device's hub exists, and
// the sorted ID index and per-hub device counts match the records. On disk: a change
// is appended and fsynced before it is applied, and a failed append is cut off again,
// so the file must replay to exactly the records memory holds and end where the last
// acknowledged append ended. Anything else — a file changed, cut short or damaged
// behind the store's back, or a failed write that could not be rolled back — is a
// problem. An interrupted write leaves nothing behind once the store is open (Open
// cuts a torn final frame off), so there are no leftovers.
//
// Check holds the write lock while it replays the file, so writes wait and reads do
// not. It returns ErrClosed after Close, and an error when the file cannot be read;
// inconsistencies are in the report, never the error.
func (s *Store) Check(ctx context.Context) (store.Report, error) {
	if err := ctx.Err(); err != nil {
		return store.Report{}, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return store.Report{}, fmt.Errorf("check: %w", ErrClosed)
	}
	// Only the holder of writeMu changes st, so it is read here without mu.
	rep := store.Report{Hubs: len(s.st.hubs), Devices: len(s.st.devices)}
	s.st.check(&rep)
	file := fmt.Sprintf("file %s", s.path)
	if s.broken != nil {
		rep.Problemf(file, "%v", s.broken)
	}
	fi, err := s.f.Stat()
	if err != nil {
		return store.Report{}, fmt.Errorf("check %s: %w", s.path, err)
	}
	if fi.Size() != s.size {
		rep.Problemf(file, "is %d bytes, but the acknowledged writes end at %d", fi.Size(), s.size)
	}
	r, err := replay(s.f, fi.Size(), s.master)
	switch {
	case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKey):
		rep.Problemf(file, "does not replay: %v", err)
		return rep, nil
	case err != nil:
		return store.Report{}, fmt.Errorf("check %s: %w", s.path, err)
	}
	if r.end != fi.Size() {
		rep.Problemf(file, "ends in %d bytes that are not a whole frame", fi.Size()-r.end)
	}
	diffStates(r.st, s.st, &rep)
	return rep, nil
}

// check reports records filed under another name, devices whose hub is missing, and
// indexes that do not match the records.
func (st *state) check(rep *store.Report) {
	for _, name := range slices.Sorted(maps.Keys(st.hubs)) {
		if h := st.hubs[name]; h.Name != name {
			rep.Problemf(fmt.Sprintf("hub %q", name), "the record names hub %q", h.Name)
		}
	}
	counts := map[string]int{}
	for _, id := range slices.Sorted(maps.Keys(st.devices)) {
		d := st.devices[id]
		what := fmt.Sprintf("device %q", id)
		if d.ID != id {
			rep.Problemf(what, "the record names device %q", d.ID)
		}
		if _, ok := st.hubs[d.Hub]; !ok {
			rep.Problemf(what, "its hub %q does not exist", d.Hub)
		}
		counts[d.Hub]++
	}
	if !slices.Equal(st.ids, slices.Sorted(maps.Keys(st.devices))) {
		rep.Problemf("device index", "%d IDs indexed for %d devices, or out of order", len(st.ids), len(st.devices))
	}
	for _, hub := range unionKeys(counts, st.hubDevices) {
		if counts[hub] != st.hubDevices[hub] {
			rep.Problemf(fmt.Sprintf("hub %q", hub), "counted as used by %d devices, but %d are", st.hubDevices[hub], counts[hub])
		}
	}
}

// diffStates reports every record that disk (the file replayed) and mem disagree on.
func diffStates(disk, mem *state, rep *store.Report) {
	for _, name := range unionKeys(disk.hubs, mem.hubs) {
		d, inDisk := disk.hubs[name]
		m, inMem := mem.hubs[name]
		diffRecord(rep, fmt.Sprintf("hub %q", name), inDisk, inMem, func() bool {
			return sameEncoding(&op{kind: opPutHub, hub: &d}, &op{kind: opPutHub, hub: &m})
		})
	}
	for _, id := range unionKeys(disk.devices, mem.devices) {
		d, inDisk := disk.devices[id]
		m, inMem := mem.devices[id]
		diffRecord(rep, fmt.Sprintf("device %q", id), inDisk, inMem, func() bool {
			return sameEncoding(&op{kind: opPutDevice, device: &d}, &op{kind: opPutDevice, device: &m})
		})
	}
	for _, name := range unionKeys(disk.settings, mem.settings) {
		d, inDisk := disk.settings[name]
		m, inMem := mem.settings[name]
		diffRecord(rep, fmt.Sprintf("setting %q", name), inDisk, inMem, func() bool { return bytes.Equal(d, m) })
	}
}

func diffRecord(rep *store.Report, what string, inDisk, inMem bool, same func() bool) {
	switch {
	case !inDisk:
		rep.Problemf(what, "held in memory but not in the file")
	case !inMem:
		rep.Problemf(what, "in the file but not held in memory")
	case !same():
		rep.Problemf(what, "differs between memory and the file")
	}
}

// sameEncoding compares two records in their on-disk form, which is what a replay
// reproduces (times, for instance, lose their monotonic reading).
func sameEncoding(a, b *op) bool {
	ea, erra := encodeOp(a)
	eb, errb := encodeOp(b)
	defer clear(ea) // they may hold keys and secrets
	defer clear(eb)
	return erra == nil && errb == nil && bytes.Equal(ea, eb)
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
