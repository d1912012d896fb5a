package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Field gateways. The store keeps the relation as a field of the leaf (Device.Parent).
// A store with a parent index (store.ChildLister: the embedded store) reads a
// gateway's children directly; for one without (the Vault store) the registry finds
// them by scanning the ID-ordered listing. That costs a pass over every device, and
// only happens when a gateway is deleted or stops being one, and when an operator
// lists children.
//
// The checks here read, then write: they are not one transaction with the write. A
// child created while its gateway is being deleted can be left naming a parent that
// is gone. Such a child obtains nothing through anyone: the token path re-checks the
// relation on every request and refuses any caller that is not the enabled gateway the
// child names — that device, not a later one re-using its ID, since the child keeps
// its gateway's CreatedAt (Device.ParentCreatedAt) — and the operator sees it with
// GET /devices?parent= and moves it.

// scanPage is how many devices one store read of a children scan fetches.
const scanPage = 1000

// checkParent applies the gateway rules to a device about to be created: its own
// shape, then the gateway its Parent names.
func (r *Registry) checkParent(ctx context.Context, d *domain.Device) error {
	if err := d.CheckGatewayShape(); err != nil {
		return err
	}
	if d.Parent == "" {
		return nil
	}
	p, err := r.parentOf(ctx, d.Parent)
	if err != nil {
		return err
	}
	if err := d.CheckParent(p); err != nil {
		return err
	}
	d.SetParent(p)
	return nil
}

// parentOf reads the device a Parent field names; a missing one is a 400 naming the
// field, not a 404 of the request's own resource.
func (r *Registry) parentOf(ctx context.Context, id string) (domain.Device, error) {
	if !domain.ValidID(id) {
		return domain.Device{}, domain.Invalid("parent must be %s", domain.IDRule)
	}
	p, err := r.store.GetDevice(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return domain.Device{}, domain.Invalid("parent: device %q does not exist", id)
	case err != nil:
		return domain.Device{}, fmt.Errorf("read parent %q: %w", id, err)
	}
	return p, nil
}

// refuseIfParent returns store.ErrConflict when id is a gateway some device still
// names as its parent; what says what was refused. A device that is not a gateway is
// not scanned for: no device can name it.
func (r *Registry) refuseIfParent(ctx context.Context, id, what string) error {
	d, err := r.store.GetDevice(ctx, id)
	if err != nil {
		return store.Describe(fmt.Sprintf("device %q", id), err)
	}
	if !d.Gateway {
		return nil
	}
	n, first, err := r.countChildren(ctx, id)
	if err != nil {
		return err
	}
	if n > 0 {
		return domain.Public(store.ErrConflict, "device %q cannot %s: %d device(s) name it as their parent (e.g. %q); move or delete them first", id, what, n, first)
	}
	return nil
}

// countChildren counts the devices whose parent is id: from the store's parent index
// if it has one, else by scanning every device.
func (r *Registry) countChildren(ctx context.Context, id string) (n int, first string, err error) {
	cursor := ""
	for {
		page, err := r.childPage(ctx, id, cursor, scanPage)
		if err != nil {
			return 0, "", fmt.Errorf("scan for children of %q: %w", id, err)
		}
		for _, d := range page.Devices {
			if d.Parent == id {
				if n == 0 {
					first = d.ID
				}
				n++
			}
		}
		if page.Next == "" {
			return n, first, nil
		}
		cursor = page.Next
	}
}

// ListChildren returns the devices whose parent is gateway, after cursor. With a
// store that indexes children it returns up to limit of them; otherwise it filters one
// page of up to limit devices, so the page may hold fewer than limit children, or
// none, while Next is set, and reading every page costs one pass over all devices.
func (r *Registry) ListChildren(ctx context.Context, gateway, cursor string, limit int) (store.Page, error) {
	return r.childPage(ctx, gateway, cursor, limit)
}

// childPage reads a page of gateway's children from the store's parent index, or
// falls back to filtering a page of the device listing.
func (r *Registry) childPage(ctx context.Context, gateway, cursor string, limit int) (store.Page, error) {
	if cl, ok := r.store.(store.ChildLister); ok {
		page, err := cl.ListChildren(ctx, gateway, cursor, limit)
		if !errors.Is(err, errors.ErrUnsupported) {
			return page, err
		}
	}
	page, err := r.store.ListDevices(ctx, cursor, limit)
	if err != nil {
		return store.Page{}, err
	}
	var kept []domain.Device // a new slice: the store's may be shared
	for _, d := range page.Devices {
		if d.Parent == gateway {
			kept = append(kept, d)
		}
	}
	page.Devices = kept
	return page, nil
}
