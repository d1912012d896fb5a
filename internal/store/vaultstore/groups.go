package vaultstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/coalesce"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Group markers: the marker write of concurrent creates on one hub, shared. A device
// on a hub needs a marker there before its record (DeleteHub reads the markers to
// learn which devices may use the hub), and one KV v2 write costs Vault about as much
// CPU as the record's: with a marker each, a bulk import paid two writes per device.
//
// The creates of one hub go through a coalesce.Batcher (markHub): a create arriving
// while no marker write of its hub is in flight writes its own single marker
// (hubdevices/{hex(hub)}/{hex(id)}), exactly as before; the creates arriving while one
// is in flight wait and then share the next write, one group marker
//
//	hubdevices/{hex(hub)}/g{32 random hex digits}   {"devices": [id, ...]}
//
// naming every one of them. Each create writes its record only after its marker (single
// or group) is stored, and the record names its group (deviceRecord.MarkerGroup), so the
// write order and DeleteHub's protocol are those of single markers; DeleteHub and Check
// read a group's names as if each were a single marker.
//
// A group is written once, with check-and-set 0 under a fresh random name, and after
// that only shrinks: a create that fails or is rolled back, a delete of the device and
// a move to another hub remove the device's name (ungroup); the last removal deletes the
// group. A name may be removed only when no device record relies on the entry: the
// batch never holds one ID twice (a second create of the same ID in the same batch gets
// a single marker of its own), so the one create that put an ID into a group is the
// only one whose record can name that group, and a name is removed only after that
// create failed without having written its record, or after that record was deleted or
// moved away. A crash between the group write and the records leaves names of devices
// that do not exist: orphan entries, which DeleteHub skips, Check reports as leftovers
// and DeleteHub deletes with the hub.

// groupMarkers are the two coalescers of group markers.
type groupMarkers struct {
	mark   *coalesce.Batcher[string, string]   // key: hub name; item: device ID; result: group name or ""
	unmark *coalesce.Batcher[string, struct{}] // key: hub + "/" + group; item: device ID
}

// maxGroup bounds the names in one group marker (a group of 256 128-character IDs is
// a request of about 35 KB).
const maxGroup = 256

// groupRecord is a group marker: the devices of one batch of creates on one hub.
type groupRecord struct {
	Devices []string `json:"devices"`
}

// groupName matches the segment of a group marker; enc never makes a 'g'.
var groupName = regexp.MustCompile(`^g[0-9a-f]{32}$`)

func groupPath(hub, group string) string { return markerFolder(hub) + "/" + group }

// newGroupName returns a fresh random group marker name.
func newGroupName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "g" + hex.EncodeToString(b[:])
}

// markDevice stores the marker of device id on hub before its record is written, and
// returns the group marker it is named in, "" for a single marker of its own.
func (s *Store) markDevice(ctx context.Context, hub, id string) (string, error) {
	group, err := s.groups.mark.Do(ctx, hub, id)
	if err != nil && ctx.Err() != nil {
		return "", fmt.Errorf("marker on hub %q: %w", hub, ctx.Err())
	}
	return group, err
}

// markCall is the coalesce.Func of markDevice: one marker write for the devices ids of
// hub. The group's error fails them all: no record is written for any of them.
func (s *Store) markCall(ctx context.Context, hub string, ids []string) ([]coalesce.Result[string], error) {
	out := make([]coalesce.Result[string], len(ids))
	if len(ids) == 1 {
		_, err := s.kvWrite(ctx, markerPath(hub, ids[0]), noCAS, markerRecord{Device: ids[0]})
		return out, err
	}
	seen := make(map[string]bool, len(ids))
	var members []string
	var dups []int
	for i, id := range ids {
		if seen[id] {
			dups = append(dups, i)
			continue
		}
		seen[id] = true
		members = append(members, id)
	}
	group := newGroupName()
	if len(members) > 1 {
		if _, err := s.kvWrite(ctx, groupPath(hub, group), 0, groupRecord{Devices: members}); err != nil {
			return nil, err
		}
	} else {
		group = "" // every item names one ID: a single marker serves them all
		if _, err := s.kvWrite(ctx, markerPath(hub, members[0]), noCAS, markerRecord{Device: members[0]}); err != nil {
			return nil, err
		}
	}
	for i := range out {
		out[i].Val = group
	}
	// A second create of an ID in the same batch gets a single marker (or shares the
	// single marker written above): the group entry is the first create's alone.
	for _, i := range dups {
		out[i].Val = ""
		if group != "" {
			if _, err := s.kvWrite(ctx, markerPath(hub, ids[i]), noCAS, markerRecord{Device: ids[i]}); err != nil {
				out[i].Err = err
			}
		}
	}
	return out, nil
}

// ungroup removes device id from group marker group of hub, deleting the group when it
// is left empty; best effort (a name left behind is a harmless orphan entry). Only call
// it when no record of id relies on the entry (see the top of this file).
func (s *Store) ungroup(ctx context.Context, hub, group, id string) {
	if _, err := s.groups.unmark.Do(ctx, hub+"/"+group, id); err != nil {
		s.log.Warn("vaultstore: could not remove a device from a group marker; it is a harmless orphan entry",
			"hub", hub, "device", id, "err", err)
	}
}

// unmarkCall is the coalesce.Func of ungroup; key is hub + "/" + group. Removals race
// only with other removals (a group never grows), so a lost check-and-set is retried on
// a fresh read, and deleting the group once it is empty cannot drop anyone's entry.
func (s *Store) unmarkCall(ctx context.Context, key string, ids []string) ([]coalesce.Result[struct{}], error) {
	out := make([]coalesce.Result[struct{}], len(ids))
	i := strings.LastIndexByte(key, '/') // a group name holds no '/'; a hub name may
	path := groupPath(key[:i], key[i+1:])
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		var g groupRecord
		ver, err := s.kvRead(ctx, s.cfg.WriteTimeout, path, &g)
		if errors.Is(err, store.ErrNotFound) {
			return out, nil // deleted with its hub, or emptied by another replica
		}
		if err != nil {
			return nil, err
		}
		left := slices.DeleteFunc(slices.Clone(g.Devices), func(d string) bool { return slices.Contains(ids, d) })
		switch {
		case len(left) == len(g.Devices):
			return out, nil
		case len(left) == 0:
			return out, s.kvDelete(ctx, path)
		}
		_, err = s.kvWrite(ctx, path, ver, groupRecord{Devices: left})
		if !errors.Is(err, errCASMismatch) {
			return out, err
		}
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("group marker %s keeps changing: %w", path, store.ErrConflict)
}

// hubMarkers reads the markers of hub: the devices named by single markers and group
// markers (an ID named twice once), and the folder's entries as listed, for deleting
// them with the hub. bad gets every entry that is neither (Check reports them).
func (s *Store) hubMarkers(ctx context.Context, hub string, bad func(entry string)) (ids map[string][]string, entries []string, err error) {
	entries, err = s.kvList(ctx, markerFolder(hub))
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(entries)
	// ids maps a device ID to where it is named: "" for its single marker, else groups.
	ids = map[string][]string{}
	for _, e := range entries {
		if id, ok := dec(e); ok {
			ids[id] = append(ids[id], "")
			continue
		}
		if !groupName.MatchString(e) {
			if bad != nil {
				bad(e)
			}
			continue
		}
		var g groupRecord
		if _, err := s.kvRead(ctx, s.cfg.WriteTimeout, groupPath(hub, e), &g); errors.Is(err, store.ErrNotFound) {
			continue // emptied since the LIST
		} else if err != nil {
			return nil, nil, err
		}
		for _, id := range g.Devices {
			ids[id] = append(ids[id], e)
		}
	}
	return ids, entries, nil
}

// groupLinger is how long a follow-up marker write or hub read after a write (one that
// queued behind another of its hub) waits for more creates to share it. A create on an
// idle hub never waits; under a bulk import, where a create takes tens of milliseconds
// in Vault's queue anyway, it takes the calls per device from about 1.5 to 1.4.
var groupLinger = 2 * time.Millisecond
