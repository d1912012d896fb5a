package vaultstore_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/sasvectors"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/storetest"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/tokens"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

func TestContract(t *testing.T) {
	srv := vaulttest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store { return mustStore(t, srv) })
}

func TestNewConfig(t *testing.T) {
	c, err := vault.NewClient(vault.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		client  *vault.Client
		cfg     vaultstore.Config
		want    vaultstore.Config
		wantErr bool
	}{
		{name: "defaults", client: c, want: vaultstore.Config{
			Mount: "secret", Prefix: "tokensvc", TransitMount: "transit",
			RequestTimeout: 250 * time.Millisecond, WriteTimeout: 5 * time.Second, ListTimeout: 5 * time.Second,
			PKIMount: "pki", PKIRole: "tokensvc-device",
		}},
		{name: "nested prefix and mounts", client: c,
			cfg: vaultstore.Config{Mount: "kv/iot", Prefix: "tokensvc/prod_1", TransitMount: "transit-eu", RequestTimeout: time.Second, PKIMount: "pki/devices", PKIRole: "tokensvc-x.1"},
			want: vaultstore.Config{
				Mount: "kv/iot", Prefix: "tokensvc/prod_1", TransitMount: "transit-eu",
				RequestTimeout: time.Second, WriteTimeout: 5 * time.Second, ListTimeout: 5 * time.Second,
				PKIMount: "pki/devices", PKIRole: "tokensvc-x.1",
			}},
		{name: "nil client", cfg: vaultstore.Config{}, wantErr: true},
		{name: "prefix with slash at end", client: c, cfg: vaultstore.Config{Prefix: "tokensvc/"}, wantErr: true},
		{name: "prefix with dot", client: c, cfg: vaultstore.Config{Prefix: "a.b"}, wantErr: true},
		{name: "prefix starting with dash", client: c, cfg: vaultstore.Config{Prefix: "-x"}, wantErr: true},
		{name: "mount with dotdot", client: c, cfg: vaultstore.Config{Mount: "a/../b"}, wantErr: true},
		{name: "transit mount with space", client: c, cfg: vaultstore.Config{TransitMount: "tr ansit"}, wantErr: true},
		{name: "negative timeout", client: c, cfg: vaultstore.Config{RequestTimeout: -1}, wantErr: true},
		{name: "pki mount with dotdot", client: c, cfg: vaultstore.Config{PKIMount: "pki/../x"}, wantErr: true},
		{name: "pki role with slash", client: c, cfg: vaultstore.Config{PKIRole: "a/b"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := vaultstore.New(tc.client, tc.cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("New(%+v): got nil error, want one", tc.cfg)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v): got error %v, want nil", tc.cfg, err)
			}
			if got := s.Config(); got != tc.want {
				t.Errorf("Config: got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestTransitVectors imports every known-answer vector's key into Transit through the
// store after its kind has normalised it (so the key decoding is under test too: base64
// for IoT Hub and DPS, UTF-8 text where the eventhubs kind says so) and checks that signing through Transit yields the
// vector's token byte for byte. Where the issuer's resource matches the vector's, the
// token is also minted end to end by tokens.Issuer with the store as its TransitSigner.
func TestTransitVectors(t *testing.T) {
	srv := vaulttest.Start(t)
	s := mustStore(t, srv)
	ctx := t.Context()
	for i, v := range sasvectors.Load(t) {
		t.Run(fmt.Sprintf("%d-%s", i, v.Kind), func(t *testing.T) {
			policy := v.Policy()
			hubName := fmt.Sprintf("vec-%d", i)
			hub := domain.Hub{Name: hubName, Transit: true, DefaultTTL: time.Hour, MaxTTL: time.Hour}
			var dev domain.Device
			switch v.Kind {
			case "iothub-device", "iothub-module", "iothub-policy":
				hub.Kind, hub.Hostname, hub.Mode = domain.KindIoTHub, v.Host, domain.SignDeviceKey
				dev = domain.Device{ID: v.DeviceID, Hub: hubName, PrimaryKey: testKey("other-primary"), SecondaryKey: testKey("other-secondary")}
				switch v.Kind {
				case "iothub-device":
					dev.PrimaryKey = v.Key
				case "iothub-module":
					dev.Modules = []domain.Module{{ID: v.ModuleID, PrimaryKey: v.Key, SecondaryKey: testKey("other-module")}}
				case "iothub-policy":
					hub.Mode, hub.PolicyName, hub.PolicyKey = domain.SignPolicy, policy, v.Key
					dev.PrimaryKey, dev.SecondaryKey = "", ""
				}
			case "eventhubs":
				hub.Kind, hub.Hostname, hub.EntityPath = domain.KindEventHubs, "contoso-ns.servicebus.windows.net", "telemetry"
				hub.Mode, hub.PolicyName, hub.PolicyKey = domain.SignPolicy, policy, v.Key
				dev = domain.Device{ID: "publisher-1", Hub: hubName}
			case "dps":
				hub.Kind, hub.Hostname, hub.IDScope = domain.KindDPS, "global.azure-devices-provisioning.net", v.IDScope
				hub.Mode, hub.PolicyKey = domain.SignGroupKey, v.GroupKey
				dev = domain.Device{ID: v.RegistrationID, Hub: hubName}
			default:
				t.Fatalf("unknown vector kind %q", v.Kind)
			}
			// The kind normalises the hub as the registry would: it is the kind that says
			// how the store must read the key it imports (PolicyKeyText).
			k, err := kinds.All().Lookup(hub.Kind)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Normalize(&hub); err != nil {
				t.Fatal(err)
			}
			mustCreateHub(t, s, hub)
			mustCreateDevice(t, s, dev)
			stored, err := s.GetHub(ctx, hubName)
			if err != nil {
				t.Fatalf("GetHub: got error %v, want nil", err)
			}
			if stored.PolicyKey != "" || !stored.Transit {
				t.Fatalf("GetHub: got PolicyKey %q, Transit %v, want \"\", true", stored.PolicyKey, stored.Transit)
			}

			var token string
			if v.Kind == "dps" {
				// The group key stays in Transit; the device key is derived there.
				derived, err := s.HMAC(ctx, stored, v.RegistrationID, "", []byte(v.RegistrationID))
				if err != nil {
					t.Fatalf("HMAC(registrationId): got error %v, want nil", err)
				}
				if got := base64.StdEncoding.EncodeToString(derived); got != v.DerivedKey {
					t.Fatalf("derived key: got %s, want %s", got, v.DerivedKey)
				}
				token = signer.SignAt(v.Resource, derived, v.Expiry, policy)
			} else {
				sum, err := s.HMAC(ctx, stored, v.DeviceID, v.ModuleID, signer.StringToSign(v.Resource, v.Expiry))
				if err != nil {
					t.Fatalf("HMAC: got error %v, want nil", err)
				}
				token = signer.Assemble(v.Resource, base64.StdEncoding.EncodeToString(sum), v.Expiry, policy)
			}
			if token != v.Token {
				t.Fatalf("token:\n got %s\nwant %s", token, v.Token)
			}

			if v.Kind == "eventhubs" {
				return // the issuer scopes Event Hubs tokens to a publisher; the vector is entity-wide
			}
			d, err := s.GetDevice(ctx, dev.ID)
			if err != nil {
				t.Fatalf("GetDevice: got error %v, want nil", err)
			}
			clock := func() time.Time { return time.Unix(v.Expiry-3600, 0) }
			iss := tokens.NewIssuer(s, kinds.All(), signer.New(clock), s, nil)
			got, err := iss.Issue(ctx, d, tokens.Request{ModuleID: v.ModuleID, TTL: time.Hour})
			if err != nil {
				t.Fatalf("Issue: got error %v, want nil", err)
			}
			if got.Token.Value != v.Token {
				t.Errorf("issued token:\n got %s\nwant %s", got.Token.Value, v.Token)
			}
		})
	}
}

// TestTransitDeviceRoundTrip follows a device on a Transit hub from creation to
// deletion: no key material in KV or in reads, HMACs equal to local signing with the
// imported keys, and its Transit keys gone after DeleteDevice.
func TestTransitDeviceRoundTrip(t *testing.T) {
	s, c, prefix := rootStore(t, vaulttest.Start(t))
	ctx := t.Context()

	hub := iotHub("hub-t", true)
	mustCreateHub(t, s, hub)
	d := keyedDevice("dev-1", "hub-t", "mod-a", "$edgeAgent")
	mustCreateDevice(t, s, d)

	got, err := s.GetDevice(ctx, "dev-1")
	if err != nil {
		t.Fatalf("GetDevice: got error %v, want nil", err)
	}
	if got.PrimaryKey != "" || got.SecondaryKey != "" {
		t.Errorf("GetDevice keys: got %q, %q, want empty", got.PrimaryKey, got.SecondaryKey)
	}
	if gotIDs := []string{got.Modules[0].ID, got.Modules[1].ID}; !slices.Equal(gotIDs, []string{"mod-a", "$edgeAgent"}) {
		t.Errorf("GetDevice modules: got %q, want [mod-a $edgeAgent]", gotIDs)
	}
	for _, m := range got.Modules {
		if m.PrimaryKey != "" || m.SecondaryKey != "" {
			t.Errorf("module %q keys: got %q, %q, want empty", m.ID, m.PrimaryKey, m.SecondaryKey)
		}
	}
	if string(got.Auth.Secret) != "secret-dev-1" {
		t.Errorf("Auth.Secret: got %q, want %q", got.Auth.Secret, "secret-dev-1")
	}

	secrets := []string{d.PrimaryKey, d.SecondaryKey}
	for _, m := range d.Modules {
		secrets = append(secrets, m.PrimaryKey, m.SecondaryKey)
	}
	for path, data := range dumpKV(t, c, "secret", prefix) {
		for _, k := range secrets {
			if strings.Contains(data, k) {
				t.Errorf("KV record %s holds key material", path)
			}
		}
	}

	msg := []byte("contoso.azure-devices.net%2Fdevices%2Fdev-1\n1767226600")
	tests := []struct {
		name     string
		moduleID string
		key      string
	}{
		{"device primary", "", d.PrimaryKey},
		{"module primary", "mod-a", d.Modules[0].PrimaryKey},
		{"module with $ in its ID", "$edgeAgent", d.Modules[1].PrimaryKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sum, err := s.HMAC(ctx, hub, "dev-1", tc.moduleID, msg)
			if err != nil {
				t.Fatalf("HMAC: got error %v, want nil", err)
			}
			if want := localHMAC(mustDecode(t, tc.key), msg); string(sum) != string(want) {
				t.Errorf("HMAC: got %x, want %x", sum, want)
			}
		})
	}

	var keyNames []string
	for _, mod := range []string{"", "mod-a", "$edgeAgent"} {
		for _, slot := range []string{"primary", "secondary"} {
			keyNames = append(keyNames, s.DeviceKeyName("dev-1", mod, slot))
		}
	}
	for _, n := range keyNames {
		if !transitKeyExists(t, c, n) {
			t.Errorf("Transit key %s after create: got absent, want present", n)
		}
	}

	// Updates that leave keys alone work; key changes are refused and store nothing.
	if _, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { d.Disabled = true; return nil }); err != nil {
		t.Fatalf("UpdateDevice(disable): got error %v, want nil", err)
	}
	refused := []struct {
		name string
		fn   func(*domain.Device) error
	}{
		{"set a key", func(d *domain.Device) error { d.PrimaryKey = testKey("new"); return nil }},
		{"add a module", func(d *domain.Device) error { d.Modules = append(d.Modules, domain.Module{ID: "m2"}); return nil }},
		{"move hub", func(d *domain.Device) error { d.Hub = "elsewhere"; return nil }},
	}
	for _, tc := range refused {
		if _, err := s.UpdateDevice(ctx, "dev-1", tc.fn); !errors.Is(err, vaultstore.ErrKeysInTransit) {
			t.Errorf("UpdateDevice(%s): got error %v, want %v", tc.name, err, vaultstore.ErrKeysInTransit)
		}
	}
	if got, _ := s.GetDevice(ctx, "dev-1"); !got.Disabled || len(got.Modules) != 2 {
		t.Errorf("after updates: got Disabled %v with %d modules, want true with 2", got.Disabled, len(got.Modules))
	}

	if err := s.DeleteDevice(ctx, "dev-1"); err != nil {
		t.Fatalf("DeleteDevice: got error %v, want nil", err)
	}
	for _, n := range keyNames {
		if transitKeyExists(t, c, n) {
			t.Errorf("Transit key %s after DeleteDevice: got present, want absent", n)
		}
	}
	if _, err := s.HMAC(ctx, hub, "dev-1", "", msg); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HMAC after DeleteDevice: got error %v, want %v", err, store.ErrNotFound)
	}
	if left := dumpKV(t, c, "secret", prefix); len(left) != 1 {
		t.Errorf("KV after DeleteDevice: got %d records %v, want only the hub", len(left), slices.Collect(mapsKeys(left)))
	}

	// The ID is free again, with fresh keys under the same names.
	again := keyedDevice("dev-1", "hub-t")
	again.PrimaryKey = testKey("reborn")
	mustCreateDevice(t, s, again)
	sum, err := s.HMAC(ctx, hub, "dev-1", "", msg)
	if err != nil || string(sum) != string(localHMAC(mustDecode(t, again.PrimaryKey), msg)) {
		t.Errorf("HMAC of re-created device: got %x, %v, want the new key's MAC", sum, err)
	}
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestTransitHubKeys checks hubs whose policy or group key is in Transit: nothing in
// KV, Transit refuses nothing it should accept, and DeleteHub removes the key.
func TestTransitHubKeys(t *testing.T) {
	s, c, prefix := rootStore(t, vaulttest.Start(t))
	ctx := t.Context()

	short := base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))      // below Transit's 32-byte minimum
	long := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 600))) // above its 512-byte maximum
	tests := []struct {
		name    string
		hub     domain.Hub
		key     []byte // the HMAC key the hub's tokens must be signed with
		wantErr bool
	}{
		{"iothub policy", domain.Hub{Name: "h-policy", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "device", PolicyKey: testKey("pol"), Transit: true}, mustDecode(t, testKey("pol")), false},
		{"iothub policy, 16-byte key", domain.Hub{Name: "h-short", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "device", PolicyKey: short, Transit: true}, []byte("sixteen-byte-key"), false},
		{"iothub policy, 600-byte key", domain.Hub{Name: "h-long", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "device", PolicyKey: long, Transit: true}, []byte(strings.Repeat("k", 600)), false},
		{"eventhubs key is UTF-8", domain.Hub{Name: "h-eh", Kind: domain.KindEventHubs, Mode: domain.SignPolicy, PolicyName: "send", PolicyKey: testKey("eh"), PolicyKeyText: true, EntityPath: "e", Transit: true}, []byte(testKey("eh")), false},
		{"dps group key", domain.Hub{Name: "h-dps", Kind: domain.KindDPS, Mode: domain.SignGroupKey, PolicyKey: testKey("grp"), IDScope: "0ne", Transit: true}, mustDecode(t, testKey("grp")), false},
		{"policy key not base64", domain.Hub{Name: "h-bad", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "device", PolicyKey: "not base64!", Transit: true}, nil, true},
		{"policy mode without key", domain.Hub{Name: "h-nokey", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "device", Transit: true}, nil, true},
		{"device-key hub with a policy key", domain.Hub{Name: "h-mixed", Kind: domain.KindIoTHub, Mode: domain.SignDeviceKey, PolicyKey: testKey("x"), Transit: true}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CreateHub(ctx, tc.hub)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("CreateHub: got nil error, want one")
				}
				if tc.hub.PolicyKey != "" && strings.Contains(err.Error(), tc.hub.PolicyKey) {
					t.Errorf("CreateHub error quotes the key: %v", err)
				}
				if _, err := s.GetHub(ctx, tc.hub.Name); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("GetHub after refused create: got error %v, want %v", err, store.ErrNotFound)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateHub: got error %v, want nil", err)
			}
			h, err := s.GetHub(ctx, tc.hub.Name)
			if err != nil || h.PolicyKey != "" || !h.Transit {
				t.Fatalf("GetHub: got PolicyKey %q, Transit %v, error %v; want \"\", true, nil", h.PolicyKey, h.Transit, err)
			}
			msg := []byte("resource\n1767226600")
			sum, err := s.HMAC(ctx, h, "any-device", "", msg)
			if err != nil {
				t.Fatalf("HMAC: got error %v, want nil", err)
			}
			if want := localHMAC(tc.key, msg); string(sum) != string(want) {
				t.Errorf("HMAC: got %x, want %x", sum, want)
			}
			for path, data := range dumpKV(t, c, "secret", prefix) {
				if strings.Contains(data, tc.hub.PolicyKey) {
					t.Errorf("KV record %s holds the policy key", path)
				}
			}
			if err := s.CreateHub(ctx, tc.hub); !errors.Is(err, store.ErrExists) {
				t.Errorf("CreateHub again: got error %v, want %v", err, store.ErrExists)
			}
			if err := s.DeleteHub(ctx, tc.hub.Name); err != nil {
				t.Fatalf("DeleteHub: got error %v, want nil", err)
			}
			if transitKeyExists(t, c, s.HubKeyName(tc.hub.Name)) {
				t.Errorf("Transit key of hub %q after DeleteHub: got present, want absent", tc.hub.Name)
			}
		})
	}
}

// TestCreateDeviceImportFailure makes Transit refuse the third of a device's key
// imports (a policy denies exactly that path) and checks that the two keys already
// imported are deleted and no record or marker is left.
func TestCreateDeviceImportFailure(t *testing.T) {
	srv := vaulttest.Start(t)
	root := srv.Client(t)
	cfg := vaultstore.Config{Prefix: freshPrefix()}
	rootStore := mustStoreWith(t, root, cfg)
	mustCreateHub(t, rootStore, iotHub("hub-t", true))

	d := keyedDevice("dev-x", "hub-t", "mod-a")
	denied := rootStore.DeviceKeyName("dev-x", "mod-a", "primary")
	policy := `
path "secret/*"  { capabilities = ["create", "read", "update", "delete", "list"] }
path "transit/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "transit/keys/` + denied + `/import" { capabilities = ["deny"] }
`
	s := mustStoreWith(t, tokenWithPolicy(t, srv, "no-module-import", policy), cfg)
	err := s.CreateDevice(t.Context(), d)
	if !errors.Is(err, vaultstore.ErrPermissionDenied) {
		t.Fatalf("CreateDevice: got error %v, want %v", err, vaultstore.ErrPermissionDenied)
	}
	for _, k := range []string{d.PrimaryKey, d.SecondaryKey, d.Modules[0].PrimaryKey} {
		if strings.Contains(err.Error(), k) {
			t.Errorf("CreateDevice error quotes key material: %v", err)
		}
	}
	for _, slot := range []string{"primary", "secondary"} {
		for _, mod := range []string{"", "mod-a"} {
			if n := rootStore.DeviceKeyName("dev-x", mod, slot); transitKeyExists(t, root, n) {
				t.Errorf("Transit key %s after failed create: got present, want absent", n)
			}
		}
	}
	if _, err := s.GetDevice(t.Context(), "dev-x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice after failed create: got error %v, want %v", err, store.ErrNotFound)
	}
	if left := dumpKV(t, root, "secret", cfg.Prefix); len(left) != 1 {
		t.Errorf("KV after failed create: got %d records %v, want only the hub", len(left), slices.Collect(mapsKeys(left)))
	}
}

// TestKVLayout pins where records live: names hex-encoded under the prefix, one marker
// per device under its hub, nothing else left behind by creates.
func TestKVLayout(t *testing.T) {
	s, c, prefix := rootStore(t, vaulttest.Start(t))
	mustCreateHub(t, s, iotHub("Hub/1", false))
	mustCreateDevice(t, s, keyedDevice("a%2F.b", "Hub/1"))
	if err := s.PutSetting(t.Context(), "admin", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(mapsKeys(dumpKV(t, c, "secret", prefix)))
	// "Hub/1" is 48 75 62 2f 31, "a%2F.b" is 61 25 32 46 2e 62, "admin" 61 64 6d 69 6e.
	p := prefix + "/"
	want := []string{
		p + "devices/612532462e62",
		p + "hubdevices/4875622f31/612532462e62",
		p + "hubs/4875622f31",
		p + "settings/61646d696e",
	}
	if !slices.Equal(got, want) {
		t.Errorf("KV paths:\n got %q\nwant %q", got, want)
	}
}

// TestInterruptedOperations recreates what a crash or a concurrent replica leaves
// behind and checks each is harmless: an orphan marker, orphan Transit keys, a stale
// claim; and that a live claim makes a concurrent create or delete back off.
func TestInterruptedOperations(t *testing.T) {
	s, c, prefix := rootStore(t, vaulttest.Start(t))
	ctx := t.Context()
	hex := func(s string) string { return fmt.Sprintf("%x", s) }
	write := func(rel string, data map[string]any) {
		t.Helper()
		if _, err := c.Logical().Write("secret/data/"+prefix+"/"+rel, map[string]any{"data": data}); err != nil {
			t.Fatalf("write %s: %v", rel, err)
		}
	}

	t.Run("orphan marker does not block DeleteHub", func(t *testing.T) {
		mustCreateHub(t, s, iotHub("hub-o", false))
		write("hubdevices/"+hex("hub-o")+"/"+hex("ghost"), map[string]any{"device": "ghost"})
		if err := s.DeleteHub(ctx, "hub-o"); err != nil {
			t.Fatalf("DeleteHub: got error %v, want nil", err)
		}
	})

	t.Run("orphan Transit keys are replaced by the next create", func(t *testing.T) {
		mustCreateHub(t, s, iotHub("hub-t", true))
		// A delete that crashed after removing the record: keys and marker remain.
		stale := domain.Device{ID: "dev-o", Hub: "hub-t", PrimaryKey: testKey("stale")}
		mustCreateDevice(t, s, stale)
		if _, err := c.Logical().Delete("secret/metadata/" + prefix + "/devices/" + hex("dev-o")); err != nil {
			t.Fatal(err)
		}
		d := keyedDevice("dev-o", "hub-t")
		mustCreateDevice(t, s, d)
		msg := []byte("m")
		sum, err := s.HMAC(ctx, iotHub("hub-t", true), "dev-o", "", msg)
		if err != nil || string(sum) != string(localHMAC(mustDecode(t, d.PrimaryKey), msg)) {
			t.Errorf("HMAC after replacing orphan key: got %x, %v, want the new key's MAC", sum, err)
		}
	})

	t.Run("live claim makes create and delete back off", func(t *testing.T) {
		mustCreateDevice(t, s, keyedDevice("dev-busy", "hub-t"))
		write("claims/devices/"+hex("dev-busy"), map[string]any{"owner": "other", "op": "delete", "claimedAt": time.Now().UTC()})
		if err := s.DeleteDevice(ctx, "dev-busy"); !errors.Is(err, store.ErrConflict) {
			t.Errorf("DeleteDevice under a live claim: got error %v, want %v", err, store.ErrConflict)
		}
		write("claims/devices/"+hex("dev-new"), map[string]any{"owner": "other", "op": "create", "claimedAt": time.Now().UTC()})
		if err := s.CreateDevice(ctx, keyedDevice("dev-new", "hub-t")); !errors.Is(err, store.ErrExists) {
			t.Errorf("CreateDevice under a live claim: got error %v, want %v", err, store.ErrExists)
		}
	})

	t.Run("stale claim is taken over", func(t *testing.T) {
		old := time.Now().Add(-vaultstore.ClaimTTL - time.Second).UTC()
		write("claims/devices/"+hex("dev-busy"), map[string]any{"owner": "crashed", "op": "delete", "claimedAt": old})
		if err := s.DeleteDevice(ctx, "dev-busy"); err != nil {
			t.Errorf("DeleteDevice under a stale claim: got error %v, want nil", err)
		}
		sec, err := c.Logical().Read("secret/data/" + prefix + "/claims/devices/" + hex("dev-busy"))
		if err != nil || sec != nil {
			t.Errorf("claim after DeleteDevice: got %v, %v, want released", sec, err)
		}
	})

	t.Run("stale deleting mark does not block devices", func(t *testing.T) {
		mustCreateHub(t, s, iotHub("hub-m", false))
		old := time.Now().Add(-vaultstore.ClaimTTL - time.Second).UTC()
		h := iotHub("hub-m", false)
		write("hubs/"+hex("hub-m"), map[string]any{"name": h.Name, "kind": "iothub", "mode": "deviceKey", "createdAt": h.CreatedAt, "deletingSince": old})
		mustCreateDevice(t, s, keyedDevice("dev-m", "hub-m"))
		write("hubs/"+hex("hub-m"), map[string]any{"name": h.Name, "kind": "iothub", "mode": "deviceKey", "createdAt": h.CreatedAt, "deletingSince": time.Now().UTC()})
		if err := s.CreateDevice(ctx, keyedDevice("dev-m2", "hub-m")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("CreateDevice on a hub being deleted: got error %v, want %v", err, store.ErrNotFound)
		}
	})
}

// TestUpdateDestroysReplacedSecrets checks that rotating a key kept in KV leaves the
// old key unreadable from the version history.
func TestUpdateDestroysReplacedSecrets(t *testing.T) {
	s, c, prefix := rootStore(t, vaulttest.Start(t))
	mustCreateHub(t, s, iotHub("hub-a", false))
	d := keyedDevice("dev-r", "hub-a")
	mustCreateDevice(t, s, d)
	if _, err := s.UpdateDevice(t.Context(), "dev-r", func(d *domain.Device) error {
		d.PrimaryKey = testKey("rotated")
		return nil
	}); err != nil {
		t.Fatalf("UpdateDevice: got error %v, want nil", err)
	}
	sec, err := c.Logical().ReadWithData("secret/data/"+prefix+"/devices/"+fmt.Sprintf("%x", "dev-r"), map[string][]string{"version": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if sec != nil && sec.Data["data"] != nil {
		t.Errorf("version 1 after rotation: got data %v, want destroyed", sec.Data["data"])
	}
}

// TestErrorMapping checks how Vault failures reach callers: outages of every kind as
// store.ErrUnavailable, quickly; a refused token as ErrPermissionDenied, which is not
// an outage.
func TestErrorMapping(t *testing.T) {
	srv := vaulttest.Start(t)
	cfg := vaultstore.Config{Prefix: freshPrefix()}
	good := mustStoreWith(t, srv.Client(t), cfg)
	mustCreateHub(t, good, iotHub("hub-a", false))
	mustCreateDevice(t, good, keyedDevice("dev-1", "hub-a"))
	if err := good.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: got error %v, want nil", err)
	}

	clientAt := func(t *testing.T, addr string) *vault.Client {
		t.Helper()
		vc := vault.DefaultConfig()
		vc.Address, vc.MaxRetries = addr, 0
		c, err := vault.NewClient(vc)
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken("test-token")
		return c
	}
	fake := func(status int, body string) func(t *testing.T) *vaultstore.Store {
		return func(t *testing.T) *vaultstore.Store {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				fmt.Fprint(w, body)
			}))
			t.Cleanup(ts.Close)
			return mustStoreWith(t, clientAt(t, ts.URL), cfg)
		}
	}

	tests := []struct {
		name    string
		open    func(t *testing.T) *vaultstore.Store
		before  func(t *testing.T)
		wantErr error
		notErr  error
	}{
		{
			name: "paused server (SIGSTOP)",
			open: func(t *testing.T) *vaultstore.Store { return good },
			before: func(t *testing.T) {
				srv.Pause()
				t.Cleanup(srv.Resume)
				waitUnresponsive(t, srv.Addr)
			},
			wantErr: store.ErrUnavailable,
		},
		{
			name: "connection refused",
			open: func(t *testing.T) *vaultstore.Store {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return mustStoreWith(t, clientAt(t, "http://"+addr), cfg)
			},
			wantErr: store.ErrUnavailable,
		},
		{name: "sealed (503)", open: fake(503, `{"errors":["Vault is sealed"]}`), wantErr: store.ErrUnavailable},
		{name: "internal error (500)", open: fake(500, `{"errors":["internal error"]}`), wantErr: store.ErrUnavailable},
		{name: "rate limited (429)", open: fake(429, `{"errors":["rate limit quota exceeded"]}`), wantErr: store.ErrUnavailable},
		{name: "garbage body", open: fake(200, `not json`), notErr: store.ErrUnavailable},
		{
			name: "permission denied (403)",
			open: func(t *testing.T) *vaultstore.Store {
				return mustStoreWith(t, tokenWithPolicy(t, srv, "nothing", `path "sys/nothing" { capabilities = ["read"] }`), cfg)
			},
			wantErr: vaultstore.ErrPermissionDenied,
			notErr:  store.ErrUnavailable,
		},
		{
			name: "permission denied (403) while logged in",
			open: func(t *testing.T) *vaultstore.Store {
				c := tokenWithPolicy(t, srv, "nothing", `path "sys/nothing" { capabilities = ["read"] }`)
				return mustStoreWith(t, c, cfg, vaultstore.WithAuthState(func() error { return nil }))
			},
			wantErr: vaultstore.ErrPermissionDenied,
			notErr:  store.ErrUnavailable,
		},
		{
			// Vault came back from an outage the token did not outlive, and the next
			// login is still to come: an outage for callers, not a policy problem.
			name: "token gone while not logged in (403)",
			open: func(t *testing.T) *vaultstore.Store {
				c := srv.Client(t)
				c.SetToken("hvs.expired-during-the-outage")
				return mustStoreWith(t, c, cfg, vaultstore.WithAuthState(func() error { return errors.New("vault login (approle): connection refused") }))
			},
			wantErr: store.ErrUnavailable,
			notErr:  vaultstore.ErrPermissionDenied,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			if tc.before != nil {
				tc.before(t)
			}
			start := time.Now()
			_, err := s.GetDevice(t.Context(), "dev-1")
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("GetDevice: got nil error, want one")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("GetDevice: got error %v, want %v", err, tc.wantErr)
			}
			if tc.notErr != nil && errors.Is(err, tc.notErr) {
				t.Errorf("GetDevice: got error %v, which must not be %v", err, tc.notErr)
			}
			if !strings.Contains(err.Error(), `get device "dev-1"`) {
				t.Errorf("GetDevice error %q does not name the operation", err)
			}
			// A behavioural bound (RequestTimeout is 250ms), not a benchmark: a hung Vault
			// must not stall the request path for seconds.
			if elapsed > time.Second {
				t.Errorf("GetDevice took %v, want < 1s", elapsed)
			}
			if errors.Is(tc.wantErr, store.ErrUnavailable) {
				if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("Ping: got error %v, want %v", err, store.ErrUnavailable)
				}
			}
			if tc.wantErr == vaultstore.ErrPermissionDenied && !strings.Contains(err.Error(), "check the tokensvc policy") {
				t.Errorf("GetDevice error %q does not say to check the policy", err)
			}
		})
	}
	if _, err := good.GetDevice(t.Context(), "dev-1"); err != nil {
		t.Errorf("GetDevice after resume: got error %v, want nil", err)
	}
	if err := good.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := good.GetDevice(t.Context(), "dev-1"); !errors.Is(err, vaultstore.ErrClosed) {
		t.Errorf("GetDevice after Close: got error %v, want %v", err, vaultstore.ErrClosed)
	}
}

// waitUnresponsive returns once the server at addr stops answering: SIGSTOP is
// delivered asynchronously, and a request that slips in before the process stops
// would make the paused case pass or fail by luck.
func waitUnresponsive(t *testing.T, addr string) {
	t.Helper()
	hc := &http.Client{Timeout: 100 * time.Millisecond}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := hc.Get(addr + "/v1/sys/health")
		if err != nil {
			return
		}
		resp.Body.Close()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("vault still answers 10s after SIGSTOP")
}

// TestListDevicesDuringChanges pages while devices change: devices deleted after the
// first page are skipped without shrinking the next page, and a device this store
// creates meanwhile shows up in it.
func TestListDevicesDuringChanges(t *testing.T) {
	srv := vaulttest.Start(t)
	cfg := vaultstore.Config{Prefix: freshPrefix()}
	s := mustStoreWith(t, srv.Client(t), cfg)
	other := mustStoreWith(t, srv.Client(t), cfg) // another replica
	ctx := t.Context()
	mustCreateHub(t, s, iotHub("hub-a", false))
	for i := range 30 {
		mustCreateDevice(t, s, domain.Device{ID: fmt.Sprintf("dev-%02d", i), Hub: "hub-a"})
	}
	ids := func(p store.Page) []string {
		var out []string
		for _, d := range p.Devices {
			out = append(out, d.ID)
		}
		return out
	}
	first, err := s.ListDevices(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if first.Next != "dev-09" {
		t.Fatalf("first page Next: got %q, want dev-09", first.Next)
	}
	for i := 10; i < 15; i++ {
		if err := other.DeleteDevice(ctx, fmt.Sprintf("dev-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	second, err := s.ListDevices(ctx, first.Next, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"dev-15", "dev-16", "dev-17", "dev-18", "dev-19", "dev-20", "dev-21", "dev-22", "dev-23", "dev-24"}
	if got := ids(second); !slices.Equal(got, want) || second.Next != "dev-24" {
		t.Errorf("second page: got %q Next %q, want %q Next dev-24", got, second.Next, want)
	}
	mustCreateDevice(t, s, domain.Device{ID: "dev-245", Hub: "hub-a"})
	third, err := s.ListDevices(ctx, second.Next, 10)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"dev-245", "dev-25", "dev-26", "dev-27", "dev-28", "dev-29"}
	if got := ids(third); !slices.Equal(got, want) || third.Next != "" {
		t.Errorf("third page: got %q Next %q, want %q Next \"\"", got, third.Next, want)
	}
}

// TestLeastPrivilegePolicy runs every kind of operation with a token holding only the
// published policy, deploy/vault/tokensvc.hcl, so it cannot drift from what the store
// really needs.
func TestLeastPrivilegePolicy(t *testing.T) {
	srv := vaulttest.Start(t)
	prefix := freshPrefix()
	file, err := os.ReadFile("../../../deploy/vault/tokensvc.hcl")
	if err != nil {
		t.Fatal(err)
	}
	policy := strings.NewReplacer("tokensvc", prefix).Replace(string(file))
	// Clean-up steps only log when they fail, so a missing capability there shows up as
	// a warning, not an error.
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	s := mustStoreWith(t, tokenWithPolicy(t, srv, "tokensvc", policy), vaultstore.Config{Prefix: prefix}, vaultstore.WithLogger(logger))
	ctx := t.Context()
	msg := []byte("m")
	steps := []struct {
		name string
		do   func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"CreateHub kv", func() error { return s.CreateHub(ctx, iotHub("hub-kv", false)) }},
		{"CreateHub transit device keys", func() error { return s.CreateHub(ctx, iotHub("hub-t", true)) }},
		{"CreateHub transit policy", func() error {
			return s.CreateHub(ctx, domain.Hub{Name: "hub-p", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "d", PolicyKey: testKey("p"), Transit: true})
		}},
		{"GetHub", func() error { _, err := s.GetHub(ctx, "hub-t"); return err }},
		{"ListHubs", func() error { _, err := s.ListHubs(ctx); return err }},
		{"CreateDevice kv", func() error { return s.CreateDevice(ctx, keyedDevice("dev-kv", "hub-kv")) }},
		{"CreateDevice transit", func() error { return s.CreateDevice(ctx, keyedDevice("dev-t", "hub-t", "m")) }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "dev-t"); return err }},
		{"ListDevices", func() error { _, err := s.ListDevices(ctx, "", 1); return err }},
		{"ListDevices next page", func() error { _, err := s.ListDevices(ctx, "dev-kv", 1); return err }},
		{"UpdateDevice rotating a key", func() error {
			_, err := s.UpdateDevice(ctx, "dev-kv", func(d *domain.Device) error { d.PrimaryKey = testKey("r"); return nil })
			return err
		}},
		{"UpdateDevice moving hubs", func() error {
			if err := s.CreateHub(ctx, iotHub("hub-kv2", false)); err != nil {
				return err
			}
			_, err := s.UpdateDevice(ctx, "dev-kv", func(d *domain.Device) error { d.Hub = "hub-kv2"; return nil })
			return err
		}},
		{"HMAC device key", func() error { _, err := s.HMAC(ctx, iotHub("hub-t", true), "dev-t", "m", msg); return err }},
		{"HMAC hub key", func() error {
			_, err := s.HMAC(ctx, domain.Hub{Name: "hub-p", Mode: domain.SignPolicy, Transit: true}, "dev-x", "", msg)
			return err
		}},
		{"Check", func() error {
			rep, err := s.Check(ctx)
			if err != nil {
				return err
			}
			if err := rep.Err(); err != nil {
				return err
			}
			if rep.Hubs != 4 || rep.Devices != 2 || len(rep.Leftovers) != 0 || len(rep.Unchecked) != 1 {
				return fmt.Errorf("got %d hubs, %d devices, leftovers %v, unchecked %q; want 4, 2, none and the Transit key listing", rep.Hubs, rep.Devices, rep.Leftovers, rep.Unchecked)
			}
			return nil
		}},
		{"DeleteHub in use", func() error {
			if err := s.DeleteHub(ctx, "hub-t"); !errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("got %v, want %v", err, store.ErrConflict)
			}
			return nil
		}},
		{"DeleteDevice kv", func() error { return s.DeleteDevice(ctx, "dev-kv") }},
		{"DeleteDevice transit", func() error { return s.DeleteDevice(ctx, "dev-t") }},
		{"DeleteHub transit policy", func() error { return s.DeleteHub(ctx, "hub-p") }},
		{"DeleteHub transit device keys", func() error { return s.DeleteHub(ctx, "hub-t") }},
		{"CreateIssuerKey and SignIssuerDigest", func() error {
			for _, alg := range []domain.IssuerAlg{domain.AlgES256, domain.AlgRS256} {
				kid := strings.ToLower(string(alg)) + "-policy"
				if _, err := s.CreateIssuerKey(ctx, kid, alg); err != nil {
					return err
				}
				if _, err := s.SignIssuerDigest(ctx, kid, alg, make([]byte, 32)); err != nil {
					return err
				}
			}
			return nil
		}},
		{"PutSetting", func() error { return s.PutSetting(ctx, "k", []byte("v")) }},
		{"GetSetting", func() error { _, err := s.GetSetting(ctx, "k"); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Errorf("%s under the documented policy: got error %v, want nil", st.name, err)
		}
		if logs.Len() > 0 {
			t.Errorf("%s under the documented policy: got log %q, want none", st.name, logs.String())
			logs.Reset()
		}
	}
	root := srv.Client(t)
	if left := dumpKV(t, root, "secret", prefix); len(left) != 3 {
		t.Errorf("KV at the end: got %d records %q, want the two KV hubs and the setting", len(left), slices.Sorted(mapsKeys(left)))
	}

	// Taking over what an interrupted delete leaves (TestInterruptedDeletes) reads the
	// record's metadata: a hub record, a setting and a claim, all left half-deleted.
	claim := map[string]any{"owner": "0123", "op": "create", "claimedAt": time.Now().UTC()}
	if _, err := root.KVv2("secret").Put(ctx, prefix+"/claims/hubs/"+hexOf("hub-c"), claim); err != nil {
		t.Fatal(err)
	}
	srv.DropVersionData(t, "secret")
	logs.Reset()
	for _, st := range []struct {
		name string
		do   func() error
	}{
		{"CreateHub over a half-deleted hub", func() error { return s.CreateHub(ctx, iotHub("hub-kv", false)) }},
		{"CreateSetting over a half-deleted setting", func() error { return s.CreateSetting(ctx, "k", []byte("w")) }},
		{"CreateHub over a half-deleted claim", func() error {
			return s.CreateHub(ctx, domain.Hub{Name: "hub-c", Kind: domain.KindIoTHub, Mode: domain.SignPolicy, PolicyName: "d", PolicyKey: testKey("c"), Transit: true})
		}},
	} {
		if err := st.do(); err != nil {
			t.Errorf("%s under the documented policy: got error %v, want nil", st.name, err)
		}
	}
	if n := strings.Count(logs.String(), "replaced a record whose delete was interrupted"); n != 3 {
		t.Errorf("takeovers logged: got %d, want 3 (the hub, the setting, the claim):\n%s", n, logs.String())
	}
}
