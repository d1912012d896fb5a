// Package store defines the persistence contract that the embedded file store and the
// Vault store both implement, and the errors every backend returns. The records
// themselves (hubs, devices, credentials) and their rules live in package domain.
package store

import (
	"context"
	"errors"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Sentinel errors returned (wrapped) by every Store implementation.
var (
	// ErrNotFound means the named hub or device does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means a hub or device with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict means the change would break a relation, e.g. deleting a hub that still has devices.
	ErrConflict = errors.New("still in use")
	// ErrUnavailable means the backend could not be reached; the caller may retry later.
	ErrUnavailable = errors.New("store unavailable")
)

// Describe returns an error for clients: what names the record (e.g. `device "d1"`) and
// the result wraps err's sentinel (ErrNotFound, ErrExists, ErrConflict) so errors.Is
// still works, without the backend's internal chain (a domain.PublicError). Other
// errors, and errors that are already a domain.PublicError, come back unchanged.
func Describe(what string, err error) error {
	if _, ok := errors.AsType[*domain.PublicError](err); ok {
		return err // already says what it is about, in words for clients
	}
	for _, s := range []error{ErrNotFound, ErrExists, ErrConflict} {
		if errors.Is(err, s) {
			return domain.Describe(what, s)
		}
	}
	return err
}

// Page is one page of a device listing.
type Page struct {
	Devices []domain.Device
	// Next is the cursor for the following page, empty on the last page.
	Next string
}

// Store is the persistence contract. Implementations must be safe for concurrent use
// and must never leave a record half-written.
type Store interface {
	// CreateHub stores a new hub; ErrExists if the name is taken.
	CreateHub(ctx context.Context, h domain.Hub) error
	// GetHub returns a hub; ErrNotFound if absent.
	GetHub(ctx context.Context, name string) (domain.Hub, error)
	// ListHubs returns all hubs ordered by name.
	ListHubs(ctx context.Context) ([]domain.Hub, error)
	// DeleteHub removes a hub; ErrNotFound if absent, ErrConflict while devices still use it.
	DeleteHub(ctx context.Context, name string) error

	// CreateDevice stores a new device; ErrExists if the ID is taken, ErrNotFound if its hub is absent.
	CreateDevice(ctx context.Context, d domain.Device) error
	// GetDevice returns a device; ErrNotFound if absent.
	GetDevice(ctx context.Context, id string) (domain.Device, error)
	// ListDevices returns up to limit devices ordered by ID, starting after cursor ("" = first page).
	ListDevices(ctx context.Context, cursor string, limit int) (Page, error)
	// UpdateDevice applies fn to the current record and stores the result atomically;
	// ErrNotFound if absent, or fn's error unchanged (nothing is stored then).
	UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error)
	// DeleteDevice removes a device; ErrNotFound if absent.
	DeleteDevice(ctx context.Context, id string) error

	// GetSetting returns a named service setting (e.g. the admin token hash); ErrNotFound if unset.
	GetSetting(ctx context.Context, name string) ([]byte, error)
	// PutSetting stores a named service setting.
	PutSetting(ctx context.Context, name string, value []byte) error
	// CreateSetting stores a named service setting only if it is unset; ErrExists if
	// it is set (of two concurrent creates, across replicas too, exactly one wins).
	CreateSetting(ctx context.Context, name string, value []byte) error

	// Close releases the store's resources.
	Close() error
}

// ChildLister is implemented by stores that index devices by their parent gateway
// (the embedded store), so a gateway's children are found without reading every
// device. Callers fall back to scanning ListDevices when a store lacks it, or when
// ListChildren fails with an error wrapping errors.ErrUnsupported (a wrapper in front
// of a store without the index).
type ChildLister interface {
	// ListChildren returns up to limit devices whose Parent is gateway, ordered by ID,
	// starting after cursor ("" = first page); Next is empty on the last page.
	ListChildren(ctx context.Context, gateway, cursor string, limit int) (Page, error)
}
