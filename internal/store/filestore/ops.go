package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// The store.Store methods. Each write checks everything that can refuse it before it
// writes anything, so a refused write leaves its transaction (shared with other
// writers in a batch) untouched.

// CreateHub stores a new hub; store.ErrExists if the name is taken.
func (s *Store) CreateHub(ctx context.Context, h domain.Hub) error {
	if h.Name == "" {
		return fmt.Errorf("create hub: %w", errEmptyName)
	}
	name := []byte(h.Name)
	val, err := s.sl.sealJSON(bucketHubs, name, recordOfHub(&h))
	if err != nil {
		return fmt.Errorf("create hub %q: %w", h.Name, err)
	}
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHubs)
		if b.Get(name) != nil {
			return refuse(store.ErrExists)
		}
		return b.Put(name, val)
	})
	if err != nil {
		return fmt.Errorf("create hub %q: %w", h.Name, err)
	}
	return nil
}

// GetHub returns a hub; store.ErrNotFound if absent.
func (s *Store) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	if err := s.enter(ctx); err != nil {
		return domain.Hub{}, fmt.Errorf("get hub %q: %w", name, err)
	}
	h, ok, gen := s.hubs.get(name)
	s.mu.RUnlock()
	if ok {
		return h, nil
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketHubs).Get([]byte(name))
		if v == nil {
			return store.ErrNotFound
		}
		var err error
		h, err = s.sl.openHub([]byte(name), v)
		return err
	})
	if err != nil {
		return domain.Hub{}, fmt.Errorf("get hub %q: %w", name, err)
	}
	s.hubs.put(name, h, gen)
	return h, nil
}

// ListHubs returns all hubs ordered by name.
func (s *Store) ListHubs(ctx context.Context) ([]domain.Hub, error) {
	hubs := []domain.Hub{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHubs).ForEach(func(k, v []byte) error {
			h, err := s.sl.openHub(k, v)
			hubs = append(hubs, h)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list hubs: %w", err)
	}
	return hubs, nil
}

// DeleteHub removes a hub; store.ErrNotFound if absent, store.ErrConflict while
// devices still use it.
func (s *Store) DeleteHub(ctx context.Context, name string) error {
	key := []byte(name)
	defer s.hubs.invalidate(name) // after the commit, whatever its outcome
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHubs)
		if b.Get(key) == nil {
			return refuse(store.ErrNotFound)
		}
		if n := hubCount(tx, key); n > 0 {
			return refuse(fmt.Errorf("%d devices still use it: %w", n, store.ErrConflict))
		}
		return b.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("delete hub %q: %w", name, err)
	}
	return nil
}

// CreateDevice stores d; store.ErrExists if the ID is taken, store.ErrNotFound if its
// hub is absent. Concurrent calls share a commit.
func (s *Store) CreateDevice(ctx context.Context, d domain.Device) error {
	if d.ID == "" {
		return fmt.Errorf("create device: %w", errEmptyName)
	}
	id := []byte(d.ID)
	val, err := s.sl.sealDevice(&d)
	if err != nil {
		return fmt.Errorf("create device %q: %w", d.ID, err)
	}
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		if b.Get(id) != nil {
			return refuse(store.ErrExists)
		}
		if tx.Bucket(bucketHubs).Get([]byte(d.Hub)) == nil {
			return refuse(fmt.Errorf("hub %q: %w", d.Hub, store.ErrNotFound))
		}
		if err := b.Put(id, val); err != nil {
			return err
		}
		return indexDevice(tx, nil, &d)
	})
	if err != nil {
		return fmt.Errorf("create device %q: %w", d.ID, err)
	}
	return nil
}

// GetDevice returns a device; store.ErrNotFound if absent.
func (s *Store) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	if err := s.enter(ctx); err != nil {
		return domain.Device{}, fmt.Errorf("get device %q: %w", id, err)
	}
	d, ok, gen := s.devices.get(id)
	s.mu.RUnlock()
	if ok {
		return d, nil
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		d, err = s.getDevice(tx, []byte(id))
		return err
	})
	if err != nil {
		return domain.Device{}, fmt.Errorf("get device %q: %w", id, err)
	}
	s.devices.put(id, d, gen)
	return d, nil
}

func (s *Store) getDevice(tx *bolt.Tx, id []byte) (domain.Device, error) {
	v := tx.Bucket(bucketDevices).Get(id)
	if v == nil {
		return domain.Device{}, store.ErrNotFound
	}
	return s.sl.openDevice(id, v)
}

// ListDevices returns up to limit devices (DefaultPageSize if limit <= 0) with IDs
// after cursor in byte order. The cursor is the last ID of the previous page, so
// paging stays correct when that device is deleted in between; Next is empty on the
// page that holds the last device.
func (s *Store) ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error) {
	var page store.Page
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		page, err = s.page(tx.Bucket(bucketDevices).Cursor(), cursor, limit, func(k, v []byte) (domain.Device, error) {
			return s.sl.openDevice(k, v)
		})
		return err
	})
	if err != nil {
		return store.Page{}, fmt.Errorf("list devices after %q: %w", cursor, err)
	}
	return page, nil
}

// page reads up to limit entries after cursor from c, turning each into a device.
func (s *Store) page(c *bolt.Cursor, cursor string, limit int, get func(k, v []byte) (domain.Device, error)) (store.Page, error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	page := store.Page{Devices: []domain.Device{}}
	k, v := c.Seek([]byte(cursor))
	if k != nil && string(k) == cursor {
		k, v = c.Next()
	}
	for ; k != nil; k, v = c.Next() {
		if len(page.Devices) == limit {
			page.Next = page.Devices[limit-1].ID
			break
		}
		d, err := get(k, v)
		if err != nil {
			return store.Page{}, err
		}
		page.Devices = append(page.Devices, d)
	}
	return page, nil
}

// UpdateDevice calls fn on the device and stores the result; store.ErrNotFound if
// absent, fn's error unchanged if it fails (and nothing is stored). fn runs once,
// inside the write transaction, so it must not call the store. It may move the device
// to another existing hub or parent but not change its ID.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	var out domain.Device
	var fnErr error
	defer s.devices.invalidate(id) // after the commit, whatever its outcome
	err := s.update(ctx, func(tx *bolt.Tx) error {
		cur, err := s.getDevice(tx, []byte(id))
		if err != nil {
			return err
		}
		d := cur.Clone()
		if fnErr = fn(&d); fnErr != nil {
			return fnErr
		}
		if d.ID != id {
			return fmt.Errorf("the ID cannot change (to %q)", d.ID)
		}
		if tx.Bucket(bucketHubs).Get([]byte(d.Hub)) == nil {
			return fmt.Errorf("hub %q: %w", d.Hub, store.ErrNotFound)
		}
		val, err := s.sl.sealDevice(&d)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketDevices).Put([]byte(id), val); err != nil {
			return err
		}
		out = d
		return indexDevice(tx, &cur, &d)
	})
	switch {
	case fnErr != nil:
		return domain.Device{}, fnErr
	case err != nil:
		return domain.Device{}, fmt.Errorf("update device %q: %w", id, err)
	}
	// fn may keep a pointer to what it changed, so the caller gets a copy of its own.
	return out.Clone(), nil
}

// DeleteDevice removes a device; store.ErrNotFound if absent.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	key := []byte(id)
	defer s.devices.invalidate(id) // after the commit, whatever its outcome
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		cur, err := s.getDevice(tx, key)
		if err != nil {
			return refuse(err)
		}
		if err := tx.Bucket(bucketDevices).Delete(key); err != nil {
			return err
		}
		return indexDevice(tx, &cur, nil)
	})
	if err != nil {
		return fmt.Errorf("delete device %q: %w", id, err)
	}
	return nil
}

// GetSetting returns a named setting; store.ErrNotFound if unset.
func (s *Store) GetSetting(ctx context.Context, name string) ([]byte, error) {
	var val []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSettings).Get([]byte(name))
		if v == nil {
			return store.ErrNotFound
		}
		var err error
		val, err = s.sl.open(bucketSettings, []byte(name), v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get setting %q: %w", name, err)
	}
	return val, nil
}

// PutSetting stores value under name, replacing any previous value.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	if name == "" {
		return fmt.Errorf("put setting: %w", errEmptyName)
	}
	key := []byte(name)
	val := s.sl.seal(bucketSettings, key, value)
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSettings).Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("put setting %q: %w", name, err)
	}
	return nil
}

// CreateSetting stores value under name unless name is set; store.ErrExists if it is.
func (s *Store) CreateSetting(ctx context.Context, name string, value []byte) error {
	if name == "" {
		return fmt.Errorf("create setting: %w", errEmptyName)
	}
	key := []byte(name)
	val := s.sl.seal(bucketSettings, key, value)
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSettings)
		if b.Get(key) != nil {
			return refuse(store.ErrExists)
		}
		return b.Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("create setting %q: %w", name, err)
	}
	return nil
}

// indexDevice moves a device's entries in the hub counts and the parent index from
// old to new (nil for a create or a delete), in the device's own transaction.
func indexDevice(tx *bolt.Tx, old, new *domain.Device) error {
	if old != nil && (new == nil || old.Hub != new.Hub) {
		if err := addHubCount(tx, []byte(old.Hub), -1); err != nil {
			return err
		}
	}
	if new != nil && (old == nil || old.Hub != new.Hub) {
		if err := addHubCount(tx, []byte(new.Hub), 1); err != nil {
			return err
		}
	}
	if old != nil && old.Parent != "" && (new == nil || old.Parent != new.Parent) {
		if err := unindexChild(tx, old.Parent, old.ID); err != nil {
			return err
		}
	}
	if new != nil && new.Parent != "" && (old == nil || old.Parent != new.Parent) {
		return indexChild(tx, new.Parent, new.ID)
	}
	return nil
}

// hubCount returns how many devices use the hub.
func hubCount(tx *bolt.Tx, hub []byte) uint64 {
	v := tx.Bucket(bucketHubCount).Get(hub)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func addHubCount(tx *bolt.Tx, hub []byte, delta int64) error {
	n := int64(hubCount(tx, hub)) + delta
	b := tx.Bucket(bucketHubCount)
	if n <= 0 {
		return b.Delete(hub)
	}
	return b.Put(bytes.Clone(hub), binary.BigEndian.AppendUint64(nil, uint64(n)))
}
