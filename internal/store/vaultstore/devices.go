package vaultstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/record"
)

// CreateDevice stores a new device; store.ErrExists if the ID is taken (or another
// create of it is under way), store.ErrNotFound if its hub is absent or being deleted.
//
// On a Transit hub that signs with device keys, the device's and each module's primary
// and secondary keys (base64, as Azure shows them) are imported into Transit first and
// the stored record holds none of them. If any import fails, the keys already imported
// are deleted and nothing is stored. Order: Transit keys → marker → record
// (check-and-set 0) → hub re-checked, and the device rolled back if the hub is being
// deleted; a crash leaves at worst orphan keys and an orphan marker, never a record
// without its keys.
//
// On a hub without Transit keys that is three Vault calls: the marker, the record
// and the hub read after them, which concurrent creates share (hubcheck.go). A taken
// ID is found by the record's check-and-set, not by a read before: callers that expect
// it (an import) look first, and then the marker written meanwhile is tidied up.
func (s *Store) CreateDevice(ctx context.Context, d domain.Device) error {
	op := fmt.Sprintf("create device %q", d.ID)
	if err := s.live(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if d.ID == "" {
		return fmt.Errorf("%s: the ID is empty", op)
	}
	hub, err := s.recentHub(ctx, d.Hub)
	if err != nil {
		return fmt.Errorf("%s: hub %q: %w", op, d.Hub, err)
	}
	if hub.deleting(s.now()) {
		return fmt.Errorf("%s: hub %q is being deleted: %w", op, d.Hub, store.ErrNotFound)
	}
	rec := toDeviceRecord(&d)
	if !hub.keyedInTransit() {
		if hub.Transit && hasKeyMaterial(&d) {
			return fmt.Errorf("%s: hub %q keeps its keys in Transit and signs with its %s; devices take no keys", op, d.Hub, hub.Mode)
		}
		if err := s.createDevice(ctx, rec, &hub); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}

	keys, err := s.deviceKeys(&d)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer clearKeys(keys)
	rec.PrimaryKey, rec.SecondaryKey = "", ""
	for i := range rec.Modules {
		rec.Modules[i].PrimaryKey, rec.Modules[i].SecondaryKey = "", ""
	}
	rec.TransitKeys = names(keys)
	err = s.withClaim(ctx, "devices", d.ID, "create", store.ErrExists, func(ctx context.Context) error {
		// Checked again under the claim: a create that finished just before we claimed
		// owns the keys under these names.
		if err := s.absent(ctx, devicePath(d.ID)); err != nil {
			return err
		}
		if err := s.importAll(ctx, keys); err != nil {
			return err
		}
		return s.createDevice(ctx, rec, &hub)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// createDevice writes the marker and then the record of a new device whose Transit
// keys (rec.TransitKeys, if any) are already imported under the caller's claim, and
// rolls everything back if the hub turns out to be going away or not to be the one
// decided on (how the record was written depends on it).
//
// The marker is the device's own or, when other creates on the hub are under way, a
// group marker shared with them (groups.go); either is stored before the record. What a
// crash (kill -9, power loss) at each point leaves, for DeleteHub (which marks the hub
// deleting, then reads the markers, then the records they name) and for Check:
//
//  1. Before the marker write returns: nothing, or a marker (a group: names) of devices
//     without records. Orphan entries: DeleteHub reads the named records, finds none and
//     goes on; Check reports them as leftovers; the hub's delete removes them.
//  2. After the marker, before or during the record write (check-and-set 0): as 1, or
//     the whole record, which is then a complete device, marked on its hub. Its import
//     line was not reported; importing it again answers "skipped".
//  3. After the record, before the hub read after it: a complete device, marked on its
//     hub, its create not acknowledged. If a DeleteHub of that very hub marked it and
//     read its markers before ours was stored, it deletes the hub and the device
//     outlives it (Check: "its hub does not exist"): the read in step 4 is what rolls
//     such a device back, and a crash takes it away. This window (a crash exactly here
//     while the same hub is being deleted) is the same with single markers and group
//     markers; closing it would take a transaction, which KV v2 does not have.
//  4. The hub read after the record finds it deleting or gone (a DeleteHub got in) or
//     replaced: the record is deleted, then our marker entry (the single marker unless
//     another record of the ID uses it; our name in the group, which no other record
//     relies on: a batch never names an ID twice), then the Transit keys. A crash in
//     between leaves orphan entries and keys, or a device on a hub marked deleting,
//     which that DeleteHub finds through the marker and refuses to delete the hub for.
//  5. A record write that fails for sure (check-and-set: the ID is taken; a 4xx): our
//     entry and keys are removed as in 4. One that may have reached Vault (timeout, 5xx)
//     keeps marker and keys: the record may be there and needs them.
//
// A failure of the shared marker write fails every create of the group before any
// record is written; a failure of one record (check-and-set, rollback) fails that
// device only, and leaves the group's other names alone.
func (s *Store) createDevice(ctx context.Context, rec deviceRecord, decided *hubRecord) error {
	tidy := context.WithoutCancel(ctx)
	group, err := s.markDevice(ctx, rec.Hub, rec.ID)
	if err != nil {
		// No record was written, so the keys belong to nothing.
		s.deleteKeysBestEffort(tidy, rec.TransitKeys)
		return err
	}
	rec.MarkerGroup = group
	if _, err := s.kvWrite(ctx, devicePath(rec.ID), 0, rec); err != nil {
		if ambiguous(err) {
			// The record may have been written: its keys and marker must stay.
			return err
		}
		s.deleteKeysBestEffort(tidy, rec.TransitKeys)
		s.unmarkDevice(tidy, rec.Hub, rec.ID, group)
		return createErr(err)
	}
	// A DeleteHub that checked the markers before ours appeared has marked the hub
	// first, so reading it now tells whether this device would outlive its hub.
	hub, err := s.hubAfter(ctx, rec.Hub)
	switch {
	case err == nil && !hub.deleting(s.now()) && sameHub(&hub, decided):
		s.forgetListing()
		return nil
	case err == nil && !hub.deleting(s.now()):
		err = fmt.Errorf("hub %q: %w", rec.Hub, errHubReplaced)
	case err == nil || errors.Is(err, store.ErrNotFound):
		err = fmt.Errorf("hub %q was deleted meanwhile: %w", rec.Hub, store.ErrNotFound)
	}
	if derr := s.kvDelete(tidy, devicePath(rec.ID)); derr != nil {
		s.log.Warn("vaultstore: could not roll back a device whose hub went away", "device", rec.ID, "hub", rec.Hub, "err", derr)
		return err
	}
	s.unmarkDevice(tidy, rec.Hub, rec.ID, group)
	s.deleteKeysBestEffort(tidy, rec.TransitKeys)
	return err
}

// unmarkDevice removes the marker entry of device id on hub that a record naming group
// (empty: a single marker) relied on, once no such record exists any more.
func (s *Store) unmarkDevice(ctx context.Context, hub, id, group string) {
	if group != "" {
		s.ungroup(ctx, hub, group, id)
		return
	}
	s.dropMarker(ctx, hub, id)
}

// dropMarker deletes the single marker of device id on hub unless a device record with
// that ID on that hub exists (the marker is then that device's, not ours).
func (s *Store) dropMarker(ctx context.Context, hub, id string) {
	var cur deviceRecord
	_, err := s.kvRead(ctx, s.cfg.WriteTimeout, devicePath(id), &cur)
	if err == nil && cur.Hub == hub {
		return
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return // unknown: keep it; an orphan marker is harmless
	}
	if err := s.kvDelete(ctx, markerPath(hub, id)); err != nil {
		s.log.Warn("vaultstore: could not delete a marker; it is a harmless orphan", "hub", hub, "device", id, "err", err)
	}
}

// readDevice returns the device record and its version; store.ErrNotFound if absent.
func (s *Store) readDevice(ctx context.Context, timeout time.Duration, id string) (deviceRecord, int, error) {
	var rec deviceRecord
	if id == "" {
		return rec, 0, store.ErrNotFound
	}
	ver, err := s.kvRead(ctx, timeout, devicePath(id), &rec)
	if err != nil {
		return rec, 0, err
	}
	if rec.ID != id {
		return rec, 0, fmt.Errorf("record at %s names device %q", devicePath(id), rec.ID)
	}
	return rec, ver, nil
}

// GetDevice returns a device; store.ErrNotFound if absent. It is one Vault read,
// bounded by RequestTimeout. A device whose keys are in Transit comes back with empty
// key fields.
func (s *Store) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	if err := s.live(); err != nil {
		return domain.Device{}, fmt.Errorf("get device %q: %w", id, err)
	}
	rec, _, err := s.readDevice(ctx, s.cfg.RequestTimeout, id)
	if err != nil {
		return domain.Device{}, fmt.Errorf("get device %q: %w", id, err)
	}
	return rec.device(), nil
}

// UpdateDevice applies fn to the current record and stores the result with
// check-and-set on the version it read; store.ErrNotFound if absent, fn's error
// unchanged if it fails (nothing is stored then). When a concurrent update wins the
// race, the record is read again and fn called again on it, so fn must only edit the
// device it is given; after updateAttempts lost races it gives up with
// store.ErrConflict.
//
// fn may move the device to another existing hub (the new hub's marker is written
// before the record, the old one deleted after). For a device whose keys are in
// Transit, fn may not change key fields, modules or hub (ErrKeysInTransit). When fn
// replaces key material or the HS256 secret, the superseded KV version is destroyed so
// the old secret cannot be read back from history.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	op := fmt.Sprintf("update device %q", id)
	if err := s.live(); err != nil {
		return domain.Device{}, fmt.Errorf("%s: %w", op, err)
	}
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		old, ver, err := s.readDevice(ctx, s.cfg.WriteTimeout, id)
		if err != nil {
			return domain.Device{}, fmt.Errorf("%s: %w", op, err)
		}
		d := old.device()
		if err := fn(&d); err != nil {
			return domain.Device{}, err
		}
		if d.ID != id {
			return domain.Device{}, fmt.Errorf("%s: the ID cannot change (to %q)", op, d.ID)
		}
		if err := s.checkUpdate(ctx, &old, &d); err != nil {
			return domain.Device{}, fmt.Errorf("%s: %w", op, err)
		}
		moved := d.Hub != old.Hub
		if moved {
			if _, err := s.kvWrite(ctx, markerPath(d.Hub, id), noCAS, markerRecord{Device: id}); err != nil {
				return domain.Device{}, fmt.Errorf("%s: %w", op, err)
			}
		}
		rec := toDeviceRecord(&d)
		rec.TransitKeys = old.TransitKeys
		if !moved {
			rec.MarkerGroup = old.MarkerGroup // a move's marker is a single one (above)
		}
		newVer, err := s.kvWrite(ctx, devicePath(id), ver, rec)
		if errors.Is(err, errCASMismatch) {
			if err := backoff(ctx, attempt); err != nil {
				return domain.Device{}, fmt.Errorf("%s: %w", op, err)
			}
			continue
		}
		if err != nil {
			return domain.Device{}, fmt.Errorf("%s: %w", op, err)
		}
		if moved {
			if err := s.finishMove(ctx, &old, rec, newVer); err != nil {
				return domain.Device{}, fmt.Errorf("%s: %w", op, err)
			}
		}
		if secretsChanged(&old, &rec) {
			if err := s.kvDestroyVersion(context.WithoutCancel(ctx), devicePath(id), ver); err != nil {
				s.log.Warn("vaultstore: could not destroy a device version holding replaced secrets",
					"device", id, "version", ver, "err", err)
			}
		}
		return d, nil
	}
	return domain.Device{}, fmt.Errorf("%s: lost %d check-and-set races to concurrent updates: %w", op, updateAttempts, store.ErrConflict)
}

// checkUpdate refuses changes this store cannot make safely: key changes on a device
// whose keys are in Transit, key material stored for a Transit hub, or a move to a hub
// that is absent, going away or keeps device keys in Transit.
func (s *Store) checkUpdate(ctx context.Context, old *deviceRecord, d *domain.Device) error {
	if len(old.TransitKeys) > 0 {
		if hasKeyMaterial(d) {
			return fmt.Errorf("key fields cannot be set: %w", ErrKeysInTransit)
		}
		if d.Hub != old.Hub {
			return fmt.Errorf("the device cannot move to another hub: %w", ErrKeysInTransit)
		}
		if !slices.Equal(sortedModuleIDs(d.Modules), sortedModuleIDs(old.Modules)) {
			return fmt.Errorf("modules cannot be added or removed: %w", ErrKeysInTransit)
		}
		return nil
	}
	if d.Hub == old.Hub && !hasKeyMaterial(d) {
		return nil
	}
	hub, _, err := s.readHub(ctx, s.cfg.WriteTimeout, d.Hub)
	if err != nil {
		return fmt.Errorf("hub %q: %w", d.Hub, err)
	}
	if d.Hub != old.Hub {
		if hub.deleting(s.now()) {
			return fmt.Errorf("hub %q is being deleted: %w", d.Hub, store.ErrNotFound)
		}
		if hub.keyedInTransit() {
			return fmt.Errorf("hub %q keeps device keys in Transit; re-create the device there instead: %w", d.Hub, ErrKeysInTransit)
		}
	}
	if hub.Transit && hasKeyMaterial(d) {
		return fmt.Errorf("hub %q keeps its keys in Transit; devices take no keys", d.Hub)
	}
	return nil
}

// finishMove completes a hub change already written as version newVer: the new hub is
// read again (a DeleteHub may have checked its markers before ours appeared) and the
// move undone if it is going away; otherwise the old hub's marker is deleted.
func (s *Store) finishMove(ctx context.Context, old *deviceRecord, rec deviceRecord, newVer int) error {
	tidy := context.WithoutCancel(ctx)
	hub, _, err := s.readHub(ctx, s.cfg.WriteTimeout, rec.Hub)
	if err == nil && !hub.deleting(s.now()) {
		s.dropMarker(tidy, old.Hub, rec.ID)
		if old.MarkerGroup != "" {
			s.ungroup(tidy, old.Hub, old.MarkerGroup, rec.ID)
		}
		return nil
	}
	if err == nil || errors.Is(err, store.ErrNotFound) {
		err = fmt.Errorf("hub %q was deleted meanwhile: %w", rec.Hub, store.ErrNotFound)
	}
	if _, uerr := s.kvWrite(tidy, devicePath(rec.ID), newVer, old); uerr != nil {
		s.log.Warn("vaultstore: could not undo a move to a hub that went away", "device", rec.ID, "hub", rec.Hub, "err", uerr)
		return err
	}
	s.dropMarker(tidy, rec.Hub, rec.ID)
	return err
}

// backoff sleeps a little, longer with each lost race and jittered, so racing updaters
// spread out instead of colliding again.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(min(attempt, 10))*int64(time.Millisecond) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sortedModuleIDs returns the IDs of modules (as given or as stored), sorted.
func sortedModuleIDs[M domain.Module | record.Module](ms []M) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = domain.Module(m).ID
	}
	slices.Sort(ids)
	return ids
}

// secretsChanged reports whether the update replaced or removed a key or the HS256
// secret that the previous version holds.
func secretsChanged(old, rec *deviceRecord) bool {
	if old.PrimaryKey != rec.PrimaryKey || old.SecondaryKey != rec.SecondaryKey || !bytes.Equal(old.Secret, rec.Secret) {
		return true
	}
	keys := make(map[string]record.Module, len(rec.Modules))
	for _, m := range rec.Modules {
		keys[m.ID] = m
	}
	for _, m := range old.Modules {
		if n := keys[m.ID]; (m.PrimaryKey != "" || m.SecondaryKey != "") && (n.PrimaryKey != m.PrimaryKey || n.SecondaryKey != m.SecondaryKey) {
			return true
		}
	}
	return false
}

// DeleteDevice removes a device; store.ErrNotFound if absent, store.ErrConflict while
// another create or delete of a device with Transit keys is under way.
//
// Order: the record first (from then on the device does not exist), then its marker
// (its name in its group marker, if any, and its single marker), then its Transit keys. A crash in between leaves an orphan marker (DeleteHub skips
// it) or orphan keys (the next create of this ID replaces them), never a record without
// keys.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	op := fmt.Sprintf("delete device %q", id)
	if err := s.live(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	rec, _, err := s.readDevice(ctx, s.cfg.WriteTimeout, id)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(rec.TransitKeys) == 0 {
		err = s.deleteDevice(ctx, rec)
	} else {
		busy := fmt.Errorf("another create or delete of this device is under way: %w", store.ErrConflict)
		err = s.withClaim(ctx, "devices", id, "delete", busy, func(ctx context.Context) error {
			rec, _, err := s.readDevice(ctx, s.cfg.WriteTimeout, id)
			if err != nil {
				return err
			}
			return s.deleteDevice(ctx, rec)
		})
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (s *Store) deleteDevice(ctx context.Context, rec deviceRecord) error {
	if err := s.kvDelete(ctx, devicePath(rec.ID)); err != nil {
		return err
	}
	// The device is gone; the rest only tidies up and cannot fail the delete.
	tidy := context.WithoutCancel(ctx)
	if rec.MarkerGroup != "" {
		s.ungroup(tidy, rec.Hub, rec.MarkerGroup, rec.ID)
	}
	// A single marker too: the device's own, or one a refused create of its ID left.
	if err := s.kvDelete(tidy, markerPath(rec.Hub, rec.ID)); err != nil {
		s.log.Warn("vaultstore: could not delete a deleted device's marker; it is a harmless orphan", "hub", rec.Hub, "device", rec.ID, "err", err)
	}
	s.deleteKeysBestEffort(tidy, rec.TransitKeys)
	return nil
}
