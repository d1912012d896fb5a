package filestore

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// The parent index: bucket children holds a bucket per gateway that has children,
// keyed by the children's IDs, so a gateway's children are a range read, not a scan
// of every device. It changes in the same transaction as the devices it indexes.

// ListChildren returns up to limit devices (DefaultPageSize if limit <= 0) whose
// parent is gateway, ordered by ID, after cursor (the last ID of the previous page);
// Next is empty on the last page. A gateway with no children, or no such device, gives
// an empty page.
func (s *Store) ListChildren(ctx context.Context, gateway, cursor string, limit int) (store.Page, error) {
	var page store.Page
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChildren).Bucket([]byte(gateway))
		if b == nil {
			page = store.Page{Devices: []domain.Device{}}
			return nil
		}
		var err error
		page, err = s.page(b.Cursor(), cursor, limit, func(k, _ []byte) (domain.Device, error) {
			d, err := s.getDevice(tx, k)
			if err != nil {
				return domain.Device{}, fmt.Errorf("%w: parent index names device %q: %w", ErrCorrupt, k, err)
			}
			return d, nil
		})
		return err
	})
	if err != nil {
		return store.Page{}, fmt.Errorf("list children of %q after %q: %w", gateway, cursor, err)
	}
	return page, nil
}

func indexChild(tx *bolt.Tx, parent, child string) error {
	b, err := tx.Bucket(bucketChildren).CreateBucketIfNotExists([]byte(parent))
	if err != nil {
		return err
	}
	return b.Put([]byte(child), []byte{})
}

// unindexChild removes child from parent's bucket, and the bucket once it is empty.
func unindexChild(tx *bolt.Tx, parent, child string) error {
	all := tx.Bucket(bucketChildren)
	b := all.Bucket([]byte(parent))
	if b == nil {
		return nil
	}
	if err := b.Delete([]byte(child)); err != nil {
		return err
	}
	if k, _ := b.Cursor().First(); k == nil {
		return all.DeleteBucket([]byte(parent))
	}
	return nil
}
