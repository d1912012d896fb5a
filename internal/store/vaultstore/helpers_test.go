package vaultstore_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

var prefixSeq atomic.Int64

// freshPrefix gives every store its own folder and Transit key names, so stores on one
// dev server start empty and never see each other.
func freshPrefix() string {
	return fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e6, prefixSeq.Add(1))
}

// mustStore opens a store on srv under a fresh prefix, authenticated as root.
func mustStore(tb testing.TB, srv *vaulttest.Server, opts ...vaultstore.Option) *vaultstore.Store {
	tb.Helper()
	return mustStoreWith(tb, srv.Client(tb), vaultstore.Config{Prefix: freshPrefix()}, opts...)
}

// rootStore opens a store on srv under a fresh prefix with a root client, and returns
// the client and the prefix with it, for tests that read or damage what the store keeps
// in Vault behind its back.
func rootStore(tb testing.TB, srv *vaulttest.Server) (*vaultstore.Store, *vault.Client, string) {
	tb.Helper()
	c, prefix := srv.Client(tb), freshPrefix()
	return mustStoreWith(tb, c, vaultstore.Config{Prefix: prefix}), c, prefix
}

func mustStoreWith(tb testing.TB, c *vault.Client, cfg vaultstore.Config, opts ...vaultstore.Option) *vaultstore.Store {
	tb.Helper()
	s, err := vaultstore.New(c, cfg, opts...)
	if err != nil {
		tb.Fatalf("New: got error %v, want nil", err)
	}
	return s
}

// testKey returns a distinct base64 32-byte key for label.
func testKey(label string) string {
	sum := sha256.Sum256([]byte(label))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func mustDecode(tb testing.TB, k string) []byte {
	tb.Helper()
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func localHMAC(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

func mustCreateHub(tb testing.TB, s store.Store, h domain.Hub) {
	tb.Helper()
	if err := s.CreateHub(context.Background(), h); err != nil {
		tb.Fatalf("CreateHub(%q): got error %v, want nil", h.Name, err)
	}
}

func mustCreateDevice(tb testing.TB, s store.Store, d domain.Device) {
	tb.Helper()
	if err := s.CreateDevice(context.Background(), d); err != nil {
		tb.Fatalf("CreateDevice(%q): got error %v, want nil", d.ID, err)
	}
}

func iotHub(name string, transit bool) domain.Hub {
	return domain.Hub{
		Name: name, Kind: domain.KindIoTHub, Hostname: name + ".azure-devices.net",
		Mode: domain.SignDeviceKey, Transit: transit,
		DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, CreatedAt: time.Unix(1700000000, 0).UTC(),
	}
}

func keyedDevice(id, hub string, modules ...string) domain.Device {
	d := domain.Device{
		ID: id, Hub: hub,
		PrimaryKey: testKey("p-" + id), SecondaryKey: testKey("s-" + id),
		Auth:      domain.Credential{Type: domain.CredHS256, Secret: []byte("secret-" + id)},
		CreatedAt: time.Unix(1700000000, 0).UTC(), UpdatedAt: time.Unix(1700000000, 0).UTC(),
	}
	for _, m := range modules {
		d.Modules = append(d.Modules, domain.Module{ID: m, PrimaryKey: testKey("mp-" + id + m), SecondaryKey: testKey("ms-" + id + m)})
	}
	return d
}

// transitKeyExists reports whether Transit has a key called name.
func transitKeyExists(tb testing.TB, c *vault.Client, name string) bool {
	tb.Helper()
	sec, err := c.Logical().Read("transit/keys/" + name)
	if err != nil {
		tb.Fatalf("read transit key %s: %v", name, err)
	}
	return sec != nil
}

// dumpKV returns every record under mount/prefix as path → JSON of its data, read
// straight through the client, to check what the store really put into Vault.
func dumpKV(tb testing.TB, c *vault.Client, mount, prefix string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	var walk func(folder string)
	walk = func(folder string) {
		sec, err := c.Logical().List(mount + "/metadata/" + folder)
		if err != nil {
			tb.Fatalf("list %s: %v", folder, err)
		}
		if sec == nil {
			return
		}
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			name := k.(string)
			if strings.HasSuffix(name, "/") {
				walk(folder + name)
				continue
			}
			rec, err := c.Logical().Read(mount + "/data/" + folder + name)
			if err != nil {
				tb.Fatalf("read %s: %v", folder+name, err)
			}
			if rec == nil {
				continue
			}
			b, _ := json.Marshal(rec.Data["data"])
			out[folder+name] = string(b)
		}
	}
	walk(prefix + "/")
	return out
}

// tokenWithPolicy returns a client whose token has only the given policy (plus default).
func tokenWithPolicy(tb testing.TB, srv *vaulttest.Server, name, hcl string) *vault.Client {
	tb.Helper()
	root := srv.Client(tb)
	if err := root.Sys().PutPolicy(name, hcl); err != nil {
		tb.Fatalf("put policy %s: %v", name, err)
	}
	sec, err := root.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{name}})
	if err != nil {
		tb.Fatalf("create token: %v", err)
	}
	c := srv.Client(tb)
	c.SetToken(sec.Auth.ClientToken)
	return c
}
