package apptest

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Outage is a store whose backend can be made unreachable on demand: while down, the
// reads a token request makes and the readiness probe fail with an error wrapping
// store.ErrUnavailable, as the Vault store's do when Vault times out. It exists because
// no real store fails on demand without a Vault server to freeze; everything above it
// (the API's 503 with Retry-After, readiness, metrics) is the shipped code. Pass it with
// Options.Store.
type Outage struct {
	store.Store
	down atomic.Bool
}

var _ store.Store = (*Outage)(nil)

// NewOutage wraps st, which it does not close.
func NewOutage(st store.Store) *Outage { return &Outage{Store: st} }

// SetDown makes the backend unreachable (true) or reachable again.
func (o *Outage) SetDown(down bool) { o.down.Store(down) }

func (o *Outage) fail(op string) error {
	if o.down.Load() {
		return fmt.Errorf("%s: backend unreachable (apptest outage): %w", op, store.ErrUnavailable)
	}
	return nil
}

// GetDevice implements store.Store; it fails while down.
func (o *Outage) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	if err := o.fail("get device"); err != nil {
		return domain.Device{}, err
	}
	return o.Store.GetDevice(ctx, id)
}

// GetHub implements store.Store; it fails while down.
func (o *Outage) GetHub(ctx context.Context, name string) (domain.Hub, error) {
	if err := o.fail("get hub"); err != nil {
		return domain.Hub{}, err
	}
	return o.Store.GetHub(ctx, name)
}

// Ping answers the readiness probe; it fails while down.
func (o *Outage) Ping(ctx context.Context) error {
	if err := o.fail("ping"); err != nil {
		return err
	}
	if p, ok := o.Store.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}
