// Package registry carries out provisioning: it applies the domain's rules and the hub
// kind's (package target) to hubs and devices, generates what is missing, and writes
// through the store. It sits between the operator API and the store.
package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Registry applies provisioning rules on top of a store.
type Registry struct {
	store   store.Store
	kinds   *target.Set
	now     func() time.Time
	transit bool
	issuer  bool
}

// Option configures a Registry.
type Option func(*Registry)

// WithTransit allows hubs whose keys live in Vault Transit; only the Vault store has it.
func WithTransit() Option { return func(r *Registry) { r.transit = true } }

// WithIssuer allows hubs of kinds that mint JWTs with the service's issuer keys; only a
// service with an issuer URL has it.
func WithIssuer() Option { return func(r *Registry) { r.issuer = true } }

// New returns a Registry over s that knows the hub kinds in kinds; now defaults to
// time.Now.
func New(s store.Store, kinds *target.Set, now func() time.Time, opts ...Option) *Registry {
	if now == nil {
		now = time.Now
	}
	r := &Registry{store: s, kinds: kinds, now: now}
	for _, o := range opts {
		o(r)
	}
	return r
}

// CreateHub checks h against the rules for its kind, fills defaults and stores it.
func (r *Registry) CreateHub(ctx context.Context, h domain.Hub) (domain.Hub, error) {
	if h.Transit && !r.transit {
		return domain.Hub{}, domain.Invalid("transit keeps keys in Vault Transit and needs the vault store")
	}
	kind, err := r.kinds.Lookup(h.Kind)
	if err != nil {
		return domain.Hub{}, err
	}
	// Mode certificate signs with the hub's CA, not the issuer keys.
	if target.UsesIssuerKeys(kind) && !r.issuer && h.Mode != domain.SignCertificate {
		return domain.Hub{}, domain.Invalid("hubs of kind %s get JWTs signed with the service's issuer keys, and this service has no issuer URL (set TOKENSVC_ISSUER_URL)", h.Kind)
	}
	if err := kind.Normalize(&h); err != nil {
		return domain.Hub{}, err
	}
	if err := h.NormalizeCommon(); err != nil {
		return domain.Hub{}, err
	}
	h.CreatedAt = r.now().UTC()
	if err := r.store.CreateHub(ctx, h); err != nil {
		return domain.Hub{}, store.Describe(fmt.Sprintf("hub %q", h.Name), err)
	}
	return h, nil
}

// Created is a new device with the secrets it was given; they are shown once.
type Created struct {
	Device domain.Device
	// Secret is the generated HS256 secret, empty for public-key credentials.
	Secret string
}

// CreateDevice checks d against its hub's signing mode, generates missing keys and the
// HS256 secret, and stores the device.
func (r *Registry) CreateDevice(ctx context.Context, d domain.Device) (Created, error) {
	hub, err := r.store.GetHub(ctx, d.Hub)
	if err != nil {
		return Created{}, store.Describe(fmt.Sprintf("hub %q", d.Hub), err)
	}
	if !domain.ValidID(d.ID) {
		return Created{}, domain.Invalid("deviceId must be %s", domain.IDRule)
	}
	kind, err := r.kinds.Lookup(hub.Kind)
	if err != nil {
		return Created{}, err
	}
	if err := kind.PrepareDevice(hub, &d); err != nil {
		return Created{}, err
	}
	secret, err := d.Auth.Prepare()
	if err != nil {
		return Created{}, err
	}
	out := Created{Secret: secret}
	if d.MaxTTL != 0 && d.MaxTTL < time.Minute {
		return Created{}, domain.Invalid("maxTtlSeconds must be at least 60")
	}
	if err := r.checkParent(ctx, &d); err != nil {
		return Created{}, err
	}
	now := r.now().UTC()
	d.CreatedAt, d.UpdatedAt = now, now
	if err := r.store.CreateDevice(ctx, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Created{}, store.Describe(fmt.Sprintf("hub %q", d.Hub), err) // deleted meanwhile
		}
		return Created{}, store.Describe(fmt.Sprintf("device %q", d.ID), err)
	}
	out.Device = d
	return out, nil
}

// DevicePatch is a partial update; nil fields are left as they are.
type DevicePatch struct {
	Disabled *bool
	// MaxTTL of zero removes the device's cap.
	MaxTTL *time.Duration
	// Gateway makes the device a gateway or an ordinary device again.
	Gateway *bool
	// Parent moves the device behind this gateway; the empty string removes its parent.
	Parent *string
}

// UpdateDevice applies p atomically. Gateway and parent rules are those of
// CreateDevice; un-setting Gateway while devices name this one as parent is
// store.ErrConflict.
func (r *Registry) UpdateDevice(ctx context.Context, id string, p DevicePatch) (domain.Device, error) {
	if p.MaxTTL != nil && *p.MaxTTL != 0 && *p.MaxTTL < time.Minute {
		return domain.Device{}, domain.Invalid("maxTtlSeconds must be 0 or at least 60")
	}
	var parent *domain.Device
	if p.Parent != nil && *p.Parent != "" && *p.Parent != id {
		pd, err := r.parentOf(ctx, *p.Parent)
		if err != nil {
			return domain.Device{}, err
		}
		parent = &pd
	}
	if p.Gateway != nil && !*p.Gateway {
		if err := r.refuseIfParent(ctx, id, "stop being a gateway"); err != nil {
			return domain.Device{}, err
		}
	}
	d, err := r.store.UpdateDevice(ctx, id, func(d *domain.Device) error {
		if p.Disabled != nil {
			d.Disabled = *p.Disabled
		}
		if p.MaxTTL != nil {
			d.MaxTTL = *p.MaxTTL
		}
		if p.Gateway != nil {
			d.Gateway = *p.Gateway
		}
		if p.Parent != nil {
			d.Parent, d.ParentCreatedAt = *p.Parent, time.Time{}
		}
		if err := d.CheckGatewayShape(); err != nil {
			return err
		}
		if parent != nil {
			if err := d.CheckParent(*parent); err != nil {
				return err
			}
			d.SetParent(*parent)
		}
		d.UpdatedAt = r.now().UTC()
		return nil
	})
	if err != nil {
		return domain.Device{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return d, nil
}

// ErrNotSupported means the operation cannot be applied to this device as it is
// configured; the message says why and is safe to show the caller.
var ErrNotSupported = errors.New("not supported")

// Rotated is a device's or module's key pair after a rotation.
type Rotated struct {
	DeviceID, ModuleID string
	// PrimaryKey is the former secondary key; SecondaryKey is new and shown only once.
	PrimaryKey, SecondaryKey string
}

// RotateKeys makes the secondary key of the device (or of its module moduleID) the
// primary and generates a new secondary, atomically. IoT Hub already accepts the old
// secondary, so tokens signed with the new primary work before the hub is updated.
// Hubs that sign with a policy or group key have no device keys (ErrNotSupported), and
// neither can Transit keys be rotated here (ErrNotSupported).
func (r *Registry) RotateKeys(ctx context.Context, id, moduleID string) (Rotated, error) {
	if moduleID != "" && !domain.ValidID(moduleID) {
		return Rotated{}, domain.Invalid("module is not a valid module ID")
	}
	cur, err := r.store.GetDevice(ctx, id)
	if err != nil {
		return Rotated{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	hub, err := r.store.GetHub(ctx, cur.Hub)
	if err != nil {
		return Rotated{}, store.Describe(fmt.Sprintf("hub %q", cur.Hub), err)
	}
	if hub.Mode != domain.SignDeviceKey {
		return Rotated{}, domain.Public(ErrNotSupported, "hub %q signs with its %s; its devices have no keys to rotate", hub.Name, hub.Mode)
	}
	if hub.Transit {
		return Rotated{}, domain.Public(ErrNotSupported, "hub %q keeps keys in Vault Transit, where tokensvc does not rotate them yet; delete and re-create the device", hub.Name)
	}
	out := Rotated{DeviceID: id, ModuleID: moduleID}
	errNoModule := store.Describe(fmt.Sprintf("module %q of device %q", moduleID, id), store.ErrNotFound)
	_, err = r.store.UpdateDevice(ctx, id, func(d *domain.Device) error {
		if d.Hub != hub.Name {
			return domain.Public(store.ErrConflict, "device %q moved to another hub meanwhile", id)
		}
		primary, secondary := &d.PrimaryKey, &d.SecondaryKey
		if moduleID != "" {
			i := slices.IndexFunc(d.Modules, func(m domain.Module) bool { return m.ID == moduleID })
			if i < 0 {
				return errNoModule
			}
			primary, secondary = &d.Modules[i].PrimaryKey, &d.Modules[i].SecondaryKey
		}
		*primary, *secondary = *secondary, domain.NewKey()
		out.PrimaryKey, out.SecondaryKey = *primary, *secondary
		d.UpdatedAt = r.now().UTC()
		return nil
	})
	switch {
	case errors.Is(err, errNoModule):
		return Rotated{}, errNoModule
	case err != nil:
		return Rotated{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return out, nil
}

// Revoke sets the device's revocation time to now: assertions issued before it, and
// nonces handed out before it, are refused from then on.
func (r *Registry) Revoke(ctx context.Context, id string) (domain.Device, error) {
	d, err := r.store.UpdateDevice(ctx, id, func(d *domain.Device) error {
		now := r.now().UTC()
		d.RevokedAt, d.UpdatedAt = now, now
		return nil
	})
	if err != nil {
		return domain.Device{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return d, nil
}

// GetHub returns a hub.
func (r *Registry) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	h, err := r.store.GetHub(ctx, name)
	if err != nil {
		return domain.Hub{}, store.Describe(fmt.Sprintf("hub %q", name), err)
	}
	return h, nil
}

// ListHubs returns every hub, ordered by name.
func (r *Registry) ListHubs(ctx context.Context) ([]domain.Hub, error) {
	return r.store.ListHubs(ctx)
}

// DeleteHub deletes a hub no device uses.
func (r *Registry) DeleteHub(ctx context.Context, name string) error {
	if err := r.store.DeleteHub(ctx, name); err != nil {
		return store.Describe(fmt.Sprintf("hub %q", name), err)
	}
	return nil
}

// GetDevice returns a device.
func (r *Registry) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	d, err := r.store.GetDevice(ctx, id)
	if err != nil {
		return domain.Device{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return d, nil
}

// ListDevices returns up to limit devices ordered by ID, after cursor.
func (r *Registry) ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error) {
	return r.store.ListDevices(ctx, cursor, limit)
}

// DeleteDevice deletes a device; store.ErrConflict while devices name it as their
// parent (move or delete them first).
func (r *Registry) DeleteDevice(ctx context.Context, id string) error {
	if err := r.refuseIfParent(ctx, id, "be deleted"); err != nil {
		return err
	}
	if err := r.store.DeleteDevice(ctx, id); err != nil {
		return store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return nil
}
