package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// CreateHub stores a new hub; store.ErrExists if the name is taken. A Transit hub that
// signs with a policy or group key has that key imported into Transit first (see
// hubKeyBytes for how the text becomes key bytes); its record then holds no key, and
// GetHub returns an empty PolicyKey for it.
func (s *Store) CreateHub(ctx context.Context, h domain.Hub) error {
	op := fmt.Sprintf("create hub %q", h.Name)
	if err := s.live(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if h.Name == "" {
		return fmt.Errorf("%s: the name is empty", op)
	}
	rec := toHubRecord(&h)
	if !h.Transit || h.Mode == domain.SignDeviceKey {
		if h.Transit && h.PolicyKey != "" {
			return fmt.Errorf("%s: a Transit hub signing with device keys takes no policyKey", op)
		}
		if _, err := s.kvWrite(ctx, hubPath(h.Name), 0, rec); err != nil {
			return fmt.Errorf("%s: %w", op, createErr(err))
		}
		return nil
	}

	key, err := hubKeyBytes(&h)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer clear(key)
	rec.PolicyKey = ""
	rec.TransitKey = s.hubKeyName(h.Name)
	// Refuse a taken name before doing any Transit work.
	if err := s.absent(ctx, hubPath(h.Name)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err = s.withClaim(ctx, "hubs", h.Name, "create", store.ErrExists, func(ctx context.Context) error {
		// Checked again under the claim: a create that finished just before we claimed
		// owns the key under this name.
		if err := s.absent(ctx, hubPath(h.Name)); err != nil {
			return err
		}
		if err := s.importReplacing(ctx, rec.TransitKey, key); err != nil {
			return err
		}
		if _, err := s.kvWrite(ctx, hubPath(h.Name), 0, rec); err != nil {
			if !ambiguous(err) {
				s.deleteKeysBestEffort(context.WithoutCancel(ctx), []string{rec.TransitKey})
			}
			return createErr(err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// createErr turns a lost check-and-set race on a create into store.ErrExists.
func createErr(err error) error {
	if errors.Is(err, errCASMismatch) {
		return store.ErrExists
	}
	return err
}

// absent returns nil if no record is at rel, store.ErrExists if one is, or the read error.
func (s *Store) absent(ctx context.Context, rel string) error {
	var skip struct{}
	_, err := s.kvRead(ctx, s.cfg.WriteTimeout, rel, &skip)
	switch {
	case err == nil:
		return store.ErrExists
	case errors.Is(err, store.ErrNotFound):
		return nil
	}
	return err
}

// readHub returns the hub record and its version; store.ErrNotFound if absent.
func (s *Store) readHub(ctx context.Context, timeout time.Duration, name string) (hubRecord, int, error) {
	var rec hubRecord
	if name == "" {
		return rec, 0, store.ErrNotFound
	}
	ver, err := s.kvRead(ctx, timeout, hubPath(name), &rec)
	if err != nil {
		return rec, 0, err
	}
	if rec.Name != name {
		return rec, 0, fmt.Errorf("record at %s names hub %q", hubPath(name), rec.Name)
	}
	return rec, ver, nil
}

// GetHub returns a hub; store.ErrNotFound if absent. A Transit hub comes back with an
// empty PolicyKey: its key is in Transit and is never read back.
func (s *Store) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	if err := s.live(); err != nil {
		return domain.Hub{}, fmt.Errorf("get hub %q: %w", name, err)
	}
	rec, _, err := s.readHub(ctx, s.cfg.RequestTimeout, name)
	if err != nil {
		return domain.Hub{}, fmt.Errorf("get hub %q: %w", name, err)
	}
	return rec.hub(), nil
}

// ListHubs returns all hubs ordered by name: one LIST, then the records read
// concurrently (hubs are few).
func (s *Store) ListHubs(ctx context.Context) ([]domain.Hub, error) {
	if err := s.live(); err != nil {
		return nil, fmt.Errorf("list hubs: %w", err)
	}
	keys, err := s.kvList(ctx, "hubs")
	if err != nil {
		return nil, fmt.Errorf("list hubs: %w", err)
	}
	slices.Sort(keys)
	found, err := readEach(ctx, keys, func(ctx context.Context, name string) (domain.Hub, error) {
		rec, _, err := s.readHub(ctx, s.cfg.WriteTimeout, name)
		if err != nil {
			return domain.Hub{}, err
		}
		return rec.hub(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("list hubs: %w", err)
	}
	hubs := make([]domain.Hub, 0, len(found))
	for _, h := range found {
		if h != nil {
			hubs = append(hubs, *h)
		}
	}
	return hubs, nil
}

// DeleteHub removes a hub; store.ErrNotFound if absent, store.ErrConflict while devices
// still use it (or while another create or delete of this Transit hub is under way).
//
// Order: mark the record as deleting, so a CreateDevice that has not yet re-checked the
// hub rolls itself back; check the hub's markers against the device records (a marker
// whose device is gone or on another hub is an orphan of an interrupted operation; a
// group marker counts as a single marker for each device it names); delete the record;
// then the markers and the Transit key. A crash after the record is gone leaves only
// orphans.
func (s *Store) DeleteHub(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete hub %q", name)
	if err := s.live(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	rec, _, err := s.readHub(ctx, s.cfg.WriteTimeout, name)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if rec.TransitKey == "" {
		err = s.deleteHub(ctx, name)
	} else {
		busy := fmt.Errorf("another create or delete of this hub is under way: %w", store.ErrConflict)
		err = s.withClaim(ctx, "hubs", name, "delete", busy, func(ctx context.Context) error {
			return s.deleteHub(ctx, name)
		})
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (s *Store) deleteHub(ctx context.Context, name string) error {
	var (
		rec hubRecord
		ver int
		err error
	)
	for attempt := 1; ; attempt++ {
		if rec, ver, err = s.readHub(ctx, s.cfg.WriteTimeout, name); err != nil {
			return err
		}
		now := s.now().UTC()
		rec.DeletingSince = &now
		ver, err = s.kvWrite(ctx, hubPath(name), ver, rec)
		if err == nil {
			break
		}
		if errors.Is(err, errCASMismatch) && attempt < 3 {
			continue // another DeleteHub or an unmark got in between
		}
		if errors.Is(err, errCASMismatch) {
			return fmt.Errorf("the hub keeps changing: %w", store.ErrConflict)
		}
		return err
	}
	unmark := func() {
		rec.DeletingSince = nil
		// Check-and-set, so a hub that was deleted meanwhile is not brought back.
		if _, err := s.kvWrite(context.WithoutCancel(ctx), hubPath(name), ver, rec); err != nil && !errors.Is(err, errCASMismatch) {
			s.log.Warn("vaultstore: could not clear a hub's deleting mark; it expires on its own",
				"hub", name, "err", err)
		}
	}

	// Single markers and group markers alike (groups.go): every device named.
	ids, markers, err := s.hubMarkers(ctx, name, nil)
	if err != nil {
		unmark()
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		var d deviceRecord
		_, err := s.kvRead(ctx, s.cfg.WriteTimeout, devicePath(id), &d)
		if err == nil && d.Hub == name {
			unmark()
			return fmt.Errorf("device %q uses it: %w", id, store.ErrConflict)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			unmark()
			return err
		}
	}
	if err := s.kvDelete(ctx, hubPath(name)); err != nil {
		unmark()
		return err
	}
	// The hub is gone; what follows only tidies up orphans.
	tidy := context.WithoutCancel(ctx)
	for _, m := range markers {
		if err := s.kvDelete(tidy, markerFolder(name)+"/"+m); err != nil {
			s.log.Warn("vaultstore: could not delete a marker of a deleted hub; it is a harmless orphan", "hub", name, "err", err)
		}
	}
	if rec.TransitKey != "" {
		s.deleteKeysBestEffort(tidy, []string{rec.TransitKey})
	}
	return nil
}
