package registry_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
)

func hs(id, hub string) domain.Device {
	return domain.Device{ID: id, Hub: hub, Auth: domain.Credential{Type: domain.CredHS256}}
}

// leafOf is HS256 device id on hub main whose parent is parent.
func leafOf(id, parent string) domain.Device {
	d := hs(id, "main")
	d.Parent = parent
	return d
}

// mustGateways registers gw (gateway on main), gw2 (gateway on main), gwt (gateway on
// transit) and plain (ordinary, main).
func mustGateways(t *testing.T, r *registry.Registry) {
	t.Helper()
	for _, d := range []domain.Device{
		{ID: "gw", Hub: "main", Gateway: true},
		{ID: "gw2", Hub: "main", Gateway: true},
		{ID: "plain", Hub: "main"},
	} {
		d.Auth.Type = domain.CredHS256
		if _, err := r.CreateDevice(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCreateDeviceGatewayRules(t *testing.T) {
	r, st := mustRegistry(t)
	mustGateways(t, r)
	// A gateway on another hub: stored directly, the transit hub needs no keys here.
	if err := st.CreateDevice(t.Context(), domain.Device{ID: "gwt", Hub: "transit", Gateway: true, Auth: domain.Credential{Type: domain.CredHS256, Secret: []byte("s")}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		d       domain.Device
		wantErr error
	}{
		{"leaf of a gateway", leafOf("leaf", "gw"), nil},
		{"a gateway without parent", func() domain.Device { d := hs("gw3", "main"); d.Gateway = true; return d }(), nil},
		{"parent does not exist", leafOf("l2", "nobody"), domain.ErrInvalid},
		{"parent is not a gateway", leafOf("l3", "plain"), domain.ErrInvalid},
		{"parent on another hub", leafOf("l4", "gwt"), domain.ErrInvalid},
		{"own parent", leafOf("l5", "l5"), domain.ErrInvalid},
		{"gateway with a parent", func() domain.Device { d := hs("gw4", "main"); d.Gateway, d.Parent = true, "gw"; return d }(), domain.ErrInvalid},
		{"parent not a valid ID", leafOf("l6", "a/b"), domain.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := r.CreateDevice(t.Context(), tt.d)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			_, gerr := st.GetDevice(t.Context(), tt.d.ID)
			if tt.wantErr != nil {
				if !errors.Is(gerr, store.ErrNotFound) {
					t.Errorf("refused device stored anyway: %v", gerr)
				}
				return
			}
			got, err := st.GetDevice(t.Context(), tt.d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Gateway != tt.d.Gateway || got.Parent != tt.d.Parent || c.Device.Parent != tt.d.Parent {
				t.Errorf("stored gateway %v parent %q, want %v %q", got.Gateway, got.Parent, tt.d.Gateway, tt.d.Parent)
			}
		})
	}
}

func TestUpdateDeleteGatewayRules(t *testing.T) {
	r, st := mustRegistry(t)
	ctx := t.Context()
	mustGateways(t, r)
	leaf := leafOf("leaf", "gw")
	if _, err := r.CreateDevice(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	str := func(s string) *string { return &s }
	tests := []struct {
		name       string
		id         string
		p          registry.DevicePatch
		wantErr    error
		wantParent string
		wantGW     bool
	}{
		{"un-gateway a gateway with children", "gw", registry.DevicePatch{Gateway: &no}, store.ErrConflict, "", true},
		{"parent of a gateway", "gw2", registry.DevicePatch{Parent: str("gw")}, domain.ErrInvalid, "", true},
		{"make a leaf a gateway", "leaf", registry.DevicePatch{Gateway: &yes}, domain.ErrInvalid, "gw", false},
		{"move to a non-gateway", "leaf", registry.DevicePatch{Parent: str("plain")}, domain.ErrInvalid, "gw", false},
		{"move to a missing device", "leaf", registry.DevicePatch{Parent: str("nobody")}, domain.ErrInvalid, "gw", false},
		{"own parent", "leaf", registry.DevicePatch{Parent: str("leaf")}, domain.ErrInvalid, "gw", false},
		{"move to another gateway", "leaf", registry.DevicePatch{Parent: str("gw2")}, nil, "gw2", false},
		{"un-gateway the emptied gateway", "gw", registry.DevicePatch{Gateway: &no}, nil, "", false},
		{"remove the parent", "leaf", registry.DevicePatch{Parent: str("")}, nil, "", false},
		{"then the leaf may become a gateway", "leaf", registry.DevicePatch{Gateway: &yes}, nil, "", true},
		{"a plain device becomes a gateway", "plain", registry.DevicePatch{Gateway: &yes}, nil, "", true},
		{"unknown device", "nobody", registry.DevicePatch{Gateway: &no}, store.ErrNotFound, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.UpdateDevice(ctx, tt.id, tt.p)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if errors.Is(err, store.ErrNotFound) {
				return
			}
			got, err := st.GetDevice(ctx, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Parent != tt.wantParent || got.Gateway != tt.wantGW {
				t.Errorf("stored gateway %v parent %q, want %v %q", got.Gateway, got.Parent, tt.wantGW, tt.wantParent)
			}
		})
	}

	// Delete: a gateway with a child is a conflict until the child moves or goes.
	child := leafOf("child", "gw2")
	if _, err := r.CreateDevice(ctx, child); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteDevice(ctx, "gw2"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete gateway with children: got %v, want ErrConflict", err)
	}
	if _, err := st.GetDevice(ctx, "gw2"); err != nil {
		t.Fatalf("refused delete removed the gateway: %v", err)
	}
	page, err := r.ListChildren(ctx, "gw2", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range page.Devices {
		ids = append(ids, d.ID)
	}
	if want := []string{"child"}; !slices.Equal(ids, want) {
		t.Errorf("children of gw2: got %v, want %v (leaf moved away from it)", ids, want)
	}
	if err := r.DeleteDevice(ctx, "child"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteDevice(ctx, "gw2"); err != nil {
		t.Fatalf("delete emptied gateway: %v", err)
	}
	if err := r.DeleteDevice(ctx, "gw2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete again: got %v, want ErrNotFound", err)
	}
}

// scanOnly hides a store's parent index, as a store without one (Vault) would.
type scanOnly struct{ store.Store }

func TestListChildrenPages(t *testing.T) {
	tests := []struct {
		name string
		wrap func(store.Store) store.Store
		// wantPages: the index gives full pages of children; the scan a page per
		// 2 devices scanned (8 devices).
		wantPages func(pages int) bool
	}{
		{"parent index", func(s store.Store) store.Store { return s }, func(p int) bool { return p == 2 }},
		{"scan without index", func(s store.Store) store.Store { return scanOnly{s} }, func(p int) bool { return p >= 4 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, st := mustRegistry(t)
			r := registry.New(tc.wrap(st), kinds.All(), nil)
			ctx := t.Context()
			mustGateways(t, r)
			var want []string
			for _, id := range []string{"a1", "a2", "b1", "b2", "c1"} {
				d := hs(id, "main")
				if id[1] == '1' {
					d.Parent = "gw"
					want = append(want, id)
				}
				if _, err := r.CreateDevice(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			cursor, pages := "", 0
			for {
				page, err := r.ListChildren(ctx, "gw", cursor, 2)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(page.Devices) > 2 {
					t.Fatalf("page of %d, want at most the limit 2", len(page.Devices))
				}
				for _, d := range page.Devices {
					got = append(got, d.ID)
				}
				if page.Next == "" {
					break
				}
				cursor = page.Next
			}
			if !slices.Equal(got, want) {
				t.Errorf("children: got %v, want %v", got, want)
			}
			if !tc.wantPages(pages) {
				t.Errorf("pages: got %d", pages)
			}
		})
	}
}

func TestImportGatewayDiffers(t *testing.T) {
	r, _ := mustRegistry(t)
	ctx := t.Context()
	mustGateways(t, r)
	leaf := leafOf("leaf", "gw")
	if _, res, err := r.ImportDevice(ctx, leaf); err != nil || res != registry.Imported {
		t.Fatalf("import leaf: %v %v", res, err)
	}
	if _, res, err := r.ImportDevice(ctx, leaf); err != nil || res != registry.Skipped {
		t.Fatalf("import again: got %v %v, want skipped", res, err)
	}
	moved := leaf
	moved.Parent = "gw2"
	if _, res, err := r.ImportDevice(ctx, moved); res != registry.Rejected || err == nil || !strings.Contains(err.Error(), "parent") {
		t.Errorf("import with another parent: got %v %v, want rejected naming parent", res, err)
	}
	orphan := hs("orphan", "main")
	orphan.Parent = "nobody"
	if _, res, err := r.ImportDevice(ctx, orphan); res != registry.Rejected || !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("import with a missing parent: got %v %v, want rejected", res, err)
	}
}
