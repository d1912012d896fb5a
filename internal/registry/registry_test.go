package registry_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
)

func mustRegistry(t *testing.T) (*registry.Registry, store.Store) {
	t.Helper()
	st, err := filestore.Open(filepath.Join(t.TempDir(), "db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := func() time.Time { return time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) }
	for _, h := range []domain.Hub{
		{Name: "main", Kind: domain.KindIoTHub, Hostname: "h.azure-devices.net", Mode: domain.SignDeviceKey},
		// What the Vault store keeps for a Transit hub; the registry must refuse to
		// rotate there before the store is asked.
		{Name: "transit", Kind: domain.KindIoTHub, Hostname: "h.azure-devices.net", Mode: domain.SignDeviceKey, Transit: true},
	} {
		if err := st.CreateHub(t.Context(), h); err != nil {
			t.Fatal(err)
		}
	}
	return registry.New(st, kinds.All(), now), st
}

func TestRotateKeys(t *testing.T) {
	r, st := mustRegistry(t)
	ctx := t.Context()
	_, err := r.CreateDevice(ctx, domain.Device{ID: "d1", Hub: "main", Auth: domain.Credential{Type: domain.CredHS256}, Modules: []domain.Module{{ID: "m1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDevice(ctx, domain.Device{ID: "t1", Hub: "transit", Auth: domain.Credential{Type: domain.CredHS256, Secret: []byte("s")}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, id, module string
		wantErr          error
	}{
		{"device", "d1", "", nil},
		{"module", "d1", "m1", nil},
		{"unknown module", "d1", "nope", store.ErrNotFound},
		{"invalid module ID", "d1", "a/b", domain.ErrInvalid},
		{"unknown device", "nobody", "", store.ErrNotFound},
		{"Transit hub", "t1", "", registry.ErrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := st.GetDevice(ctx, tt.id)
			got, err := r.RotateKeys(ctx, tt.id, tt.module)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			after, _ := st.GetDevice(ctx, tt.id)
			if err != nil {
				if after.PrimaryKey != before.PrimaryKey || after.SecondaryKey != before.SecondaryKey {
					t.Errorf("a refused rotation changed keys")
				}
				return
			}
			oldP, oldS, newP, newS := before.PrimaryKey, before.SecondaryKey, after.PrimaryKey, after.SecondaryKey
			if tt.module != "" {
				bm, _ := before.Module(tt.module)
				am, _ := after.Module(tt.module)
				oldP, oldS, newP, newS = bm.PrimaryKey, bm.SecondaryKey, am.PrimaryKey, am.SecondaryKey
				if after.PrimaryKey != before.PrimaryKey {
					t.Errorf("a module rotation changed the device key")
				}
			}
			if newP != oldS || newS == oldS || newS == oldP || got.PrimaryKey != newP || got.SecondaryKey != newS {
				t.Errorf("got primary %q secondary %q (returned %+v), want the old secondary %q as primary and a new secondary", newP, newS, got, oldS)
			}
		})
	}
}

func TestImportDevice(t *testing.T) {
	r, _ := mustRegistry(t)
	ctx := t.Context()
	key1, key2 := domain.NewKey(), domain.NewKey()
	base := domain.Device{ID: "d1", Hub: "main", PrimaryKey: key1, SecondaryKey: key2, Auth: domain.Credential{Type: domain.CredHS256}}
	with := func(edit func(*domain.Device)) domain.Device { d := base; edit(&d); return d }
	tests := []struct {
		name string
		d    domain.Device
		want registry.ImportResult
	}{
		{"new", base, registry.Imported},
		{"identical", base, registry.Skipped},
		{"keys left out", with(func(d *domain.Device) { d.PrimaryKey, d.SecondaryKey = "", "" }), registry.Skipped},
		{"other primary key", with(func(d *domain.Device) { d.PrimaryKey = key2 }), registry.Rejected},
		{"other hub", with(func(d *domain.Device) { d.Hub = "transit" }), registry.Rejected},
		{"other credential", with(func(d *domain.Device) { d.Auth.Type = domain.CredEdDSA }), registry.Rejected},
		{"disabled", with(func(d *domain.Device) { d.Disabled = true }), registry.Rejected},
		{"invalid new device", domain.Device{ID: "d2", Hub: "main", PrimaryKey: "short", Auth: domain.Credential{Type: domain.CredHS256}}, registry.Rejected},
		{"new device, unknown hub", domain.Device{ID: "d3", Hub: "nowhere", Auth: domain.Credential{Type: domain.CredHS256}}, registry.Rejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, got, err := r.ImportDevice(ctx, tt.d)
			if got != tt.want {
				t.Fatalf("got %q (%v), want %q", got, err, tt.want)
			}
			if (err != nil) != (got == registry.Rejected) {
				t.Errorf("got error %v with result %q", err, got)
			}
			if got == registry.Imported && c.Secret == "" {
				t.Errorf("created an hs256 device without returning its secret")
			}
		})
	}
}

// TestJWTHubsNeedAnIssuer: a hub of a kind signed with the issuer keys is refused, with
// a message naming the setting, unless the service has an issuer URL; SAS kinds never
// need one.
func TestJWTHubsNeedAnIssuer(t *testing.T) {
	aws := domain.Hub{Name: "aws", Kind: "awsiot", Hostname: "a1b2c3-ats.iot.eu-west-1.amazonaws.com",
		Settings: map[string]string{"authorizerName": `"tokensvc"`, "tokenKeyName": `"tok"`}}
	jwtb := domain.Hub{Name: "emqx", Kind: "jwtbroker", Hostname: "mqtt.example.com"}
	sas := domain.Hub{Name: "sas", Kind: domain.KindIoTHub, Hostname: "h.azure-devices.net"}
	tests := []struct {
		name    string
		opts    []registry.Option
		hub     domain.Hub
		wantErr error
	}{
		{"awsiot without issuer", nil, aws, domain.ErrInvalid},
		{"jwtbroker without issuer", nil, jwtb, domain.ErrInvalid},
		{"iothub without issuer", nil, sas, nil},
		{"awsiot with issuer", []registry.Option{registry.WithIssuer()}, aws, nil},
		{"jwtbroker with issuer", []registry.Option{registry.WithIssuer()}, jwtb, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := filestore.Open(filepath.Join(t.TempDir(), "db"), make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			r := registry.New(st, kinds.All(), nil, tt.opts...)
			_, err = r.CreateHub(t.Context(), tt.hub)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "TOKENSVC_ISSUER_URL") {
				t.Errorf("refusal %q does not say which setting is missing", err)
			}
			if _, gerr := st.GetHub(t.Context(), tt.hub.Name); (gerr == nil) != (err == nil) {
				t.Errorf("stored: %v, want stored only when accepted", gerr)
			}
		})
	}
}
