package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
)

func TestMayObtainFor(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	gw := domain.Device{ID: "gw", Hub: "main", Gateway: true, CreatedAt: created}
	child := domain.Device{ID: "leaf", Hub: "main", Parent: "gw", ParentCreatedAt: created}
	with := func(d domain.Device, f func(*domain.Device)) domain.Device { f(&d); return d }
	tests := []struct {
		name   string
		caller domain.Device
		target domain.Device
		want   bool
	}{
		{"own enabled child", gw, child, true},
		{"child of an earlier device with the gateway's ID", gw, with(child, func(d *domain.Device) { d.ParentCreatedAt = created.Add(-time.Hour) }), false},
		{"relation stored before ParentCreatedAt existed", gw, with(child, func(d *domain.Device) { d.ParentCreatedAt = time.Time{} }), true},
		{"caller not a gateway", with(gw, func(d *domain.Device) { d.Gateway = false }), child, false},
		{"caller disabled", with(gw, func(d *domain.Device) { d.Disabled = true }), child, false},
		{"child disabled", gw, with(child, func(d *domain.Device) { d.Disabled = true }), false},
		{"another gateway's child", gw, with(child, func(d *domain.Device) { d.Parent = "gw-2" }), false},
		{"no parent", gw, with(child, func(d *domain.Device) { d.Parent = "" }), false},
		{"child on another hub", gw, with(child, func(d *domain.Device) { d.Hub = "other" }), false},
		{"itself", gw, with(gw, func(d *domain.Device) { d.Parent = "gw" }), false},
		{"empty caller ID, empty parent", domain.Device{Gateway: true, Hub: "main"}, with(child, func(d *domain.Device) { d.Parent = "" }), false},
		{"its own parent", with(gw, func(d *domain.Device) { d.ID = "leaf-parent" }), domain.Device{ID: "gw", Hub: "main", Gateway: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.caller.MayObtainFor(&tt.target); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGatewayShapeAndParent(t *testing.T) {
	tests := []struct {
		name   string
		d      domain.Device
		parent *domain.Device
		ok     bool
	}{
		{"plain", domain.Device{ID: "d", Hub: "main"}, nil, true},
		{"gateway", domain.Device{ID: "d", Hub: "main", Gateway: true}, nil, true},
		{"leaf", domain.Device{ID: "d", Hub: "main", Parent: "gw"}, &domain.Device{ID: "gw", Hub: "main", Gateway: true}, true},
		{"gateway with parent", domain.Device{ID: "d", Hub: "main", Gateway: true, Parent: "gw"}, nil, false},
		{"own parent", domain.Device{ID: "d", Hub: "main", Parent: "d"}, nil, false},
		{"parent not an ID", domain.Device{ID: "d", Hub: "main", Parent: "a/b"}, nil, false},
		{"parent not a gateway", domain.Device{ID: "d", Hub: "main", Parent: "p"}, &domain.Device{ID: "p", Hub: "main"}, false},
		{"parent on another hub", domain.Device{ID: "d", Hub: "main", Parent: "gw"}, &domain.Device{ID: "gw", Hub: "other", Gateway: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.CheckGatewayShape()
			if err == nil && tt.parent != nil {
				err = tt.d.CheckParent(*tt.parent)
			}
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, domain.ErrInvalid)) {
				t.Errorf("got %v, want ok=%v (ErrInvalid otherwise)", err, tt.ok)
			}
		})
	}
}
