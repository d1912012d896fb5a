package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// ListDevices returns up to limit devices (DefaultPageSize if limit <= 0) with IDs
// after cursor in byte order. The cursor is the last ID of the previous page, so paging
// stays correct when that device is deleted in between; Next is empty on the page that
// holds the last device.
//
// The first page (cursor "") LISTs the devices folder; Vault's LIST cost grows with the
// fleet (about a second for 100,000 devices, hence Config.ListTimeout), so the pages
// after it reuse that sorted listing for up to listCacheTTL instead of LISTing again
// per page: paging through a large fleet is one LIST plus the record reads. A device
// created by another replica during such a walk appears in the next walk; one deleted
// meanwhile is skipped. The cursor is found by binary search and only the page's
// records are read, listConcurrency at a time.
func (s *Store) ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error) {
	op := fmt.Sprintf("list devices after %q", cursor)
	if err := s.live(); err != nil {
		return store.Page{}, fmt.Errorf("%s: %w", op, err)
	}
	if limit <= 0 {
		limit = DefaultPageSize
	}
	keys, err := s.deviceNames(ctx, cursor == "")
	if err != nil {
		return store.Page{}, fmt.Errorf("%s: %w", op, err)
	}
	start, found := slices.BinarySearch(keys, enc(cursor))
	if found {
		start++
	}
	page := store.Page{Devices: make([]domain.Device, 0, min(limit, len(keys)-start))}
	next := start
	for len(page.Devices) < limit && next < len(keys) {
		n := min(limit-len(page.Devices), len(keys)-next)
		got, err := s.readDevices(ctx, keys[next:next+n])
		if err != nil {
			return store.Page{}, fmt.Errorf("%s: %w", op, err)
		}
		for _, d := range got {
			if d != nil {
				page.Devices = append(page.Devices, *d)
			}
		}
		next += n
	}
	if next < len(keys) {
		page.Next, _ = dec(keys[next-1])
	}
	return page, nil
}

// listCacheTTL is how long pages after the first reuse a listing of the devices folder.
const listCacheTTL = 30 * time.Second

// deviceListing is a sorted listing of the devices folder and when it was taken.
type deviceListing struct {
	keys []string
	at   time.Time
}

// deviceNames returns the hex names in the devices folder, sorted. fresh forces a new
// LIST; otherwise a listing younger than listCacheTTL is reused, and concurrent callers
// share one LIST. The returned slice is never modified afterwards.
func (s *Store) deviceNames(ctx context.Context, fresh bool) ([]string, error) {
	if !fresh {
		s.listMu.Lock()
		l := s.listing
		s.listMu.Unlock()
		if l != nil && time.Since(l.at) < listCacheTTL {
			return l.keys, nil
		}
		v, err, _ := s.listGroup.Do("devices", func() (any, error) {
			// Shared by every waiting caller, so it must not end with the first one.
			return s.listDeviceNames(context.WithoutCancel(ctx))
		})
		if err != nil {
			return nil, err
		}
		return v.([]string), nil
	}
	return s.listDeviceNames(ctx)
}

func (s *Store) listDeviceNames(ctx context.Context) ([]string, error) {
	at := time.Now()
	keys, err := s.kvList(ctx, "devices")
	if err != nil {
		return nil, err
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { _, ok := dec(k); return !ok })
	// Sorted here rather than trusting the LIST order: KV v2 lists names in the order
	// of its storage keys, which need not be the names' order.
	slices.Sort(keys)
	s.listMu.Lock()
	if s.listing == nil || s.listing.at.Before(at) {
		s.listing = &deviceListing{keys: keys, at: at}
	}
	s.listMu.Unlock()
	return keys, nil
}

// forgetListing drops the cached listing after a local create, so this replica's own
// next page sees the new device.
func (s *Store) forgetListing() {
	s.listMu.Lock()
	s.listing = nil
	s.listMu.Unlock()
}

// readDevices reads the devices named by keys concurrently; a device deleted since the
// LIST comes back nil.
func (s *Store) readDevices(ctx context.Context, keys []string) ([]*domain.Device, error) {
	return readEach(ctx, keys, func(ctx context.Context, id string) (domain.Device, error) {
		rec, _, err := s.readDevice(ctx, s.cfg.WriteTimeout, id)
		if err != nil {
			return domain.Device{}, err
		}
		return rec.device(), nil
	})
}

// readEach reads the records named by keys (storage keys of one folder) with read,
// listConcurrency at a time. The result is in the order of keys, nil for a key that
// names no record (not a storage key, or deleted since the LIST); the first other
// failure fails the whole.
func readEach[T any](ctx context.Context, keys []string, read func(ctx context.Context, name string) (T, error)) ([]*T, error) {
	out := make([]*T, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listConcurrency)
	for i, k := range keys {
		name, ok := dec(k)
		if !ok {
			continue
		}
		g.Go(func() error {
			v, err := read(gctx, name)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			out[i] = &v
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
