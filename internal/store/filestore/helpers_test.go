package filestore_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

var (
	t0 = time.Date(2025, 6, 1, 8, 30, 0, 123456789, time.FixedZone("UTC+2", 2*60*60))
	t1 = t0.Add(48*time.Hour + time.Nanosecond)
)

const testPEM = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEapqUcjbB1REFfwfVQq97eF1fJ46o
aSv/HCW+fiABzDnneEOcQgUf8qmwnd3ONvilvYhuWrXYW3LozXliTr4TZQ==
-----END PUBLIC KEY-----
`

func newKey(tb testing.TB) []byte {
	tb.Helper()
	k := make([]byte, filestore.KeySize)
	rand.Read(k)
	return k
}

func storePath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "data", "tokensvc.db")
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), nil))
}

var discardLogger = slog.New(slog.DiscardHandler)

// mustOpen opens a store that is closed when the test ends; closing it earlier is fine.
func mustOpen(tb testing.TB, path string, key []byte, opts ...filestore.Option) *filestore.Store {
	tb.Helper()
	opts = append([]filestore.Option{filestore.WithLogger(testLogger(tb))}, opts...)
	s, err := filestore.Open(path, key, opts...)
	if err != nil {
		tb.Fatalf("Open(%s): got error %v, want nil", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func mustClose(tb testing.TB, s *filestore.Store) {
	tb.Helper()
	if err := s.Close(); err != nil {
		tb.Fatalf("Close: got error %v, want nil", err)
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("got error %v, want nil", err)
	}
}

func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

func iotHub(name string) domain.Hub {
	return domain.Hub{
		Name: name, Kind: domain.KindIoTHub, Hostname: name + ".azure-devices.net",
		Mode: domain.SignDeviceKey, CACert: testPEM, Settings: map[string]string{"k": "v"},
		DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, CreatedAt: t0,
	}
}

func policyHub(name string) domain.Hub {
	return domain.Hub{
		Name: name, Kind: domain.KindEventHubs, Hostname: name + ".servicebus.windows.net",
		EntityPath: "telemetry", Mode: domain.SignPolicy, PolicyName: "send",
		PolicyKey: "cG9saWN5LWtleS1mb3ItIiArIG5hbWUgKyAidGVzdA==", DefaultTTL: 10 * time.Minute,
		MaxTTL: time.Hour, CreatedAt: t0.UTC(),
	}
}

func device(id, hub string) domain.Device {
	return domain.Device{
		ID: id, Hub: hub,
		PrimaryKey:   "cHJpbWFyeS0" + id,
		SecondaryKey: "c2Vjb25kYXJ5" + id,
		Modules:      []domain.Module{{ID: "telemetry", PrimaryKey: "bW9kLXA" + id, SecondaryKey: "bW9kLXM" + id}},
		Auth:         domain.Credential{Type: domain.CredHS256, Secret: []byte{0x00, 0xff, 's', 'e', 'c'}},
		MaxTTL:       30 * time.Minute,
		CreatedAt:    t0,
		UpdatedAt:    t1,
	}
}

// populatedFile writes populate's history to a new store file, checks it is
// consistent, and closes it; it returns the file and its key.
func populatedFile(t *testing.T) (path string, key []byte) {
	t.Helper()
	path, key = storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	populate(t, s)
	mustCheckClean(t, s)
	mustClose(t, s)
	return path, key
}

// populate gives s a history with every kind of change, including the nil-versus-empty
// slices and zero values that a careless encoding would blur, and returns the names of
// the settings it touched plus one it never set.
func populate(tb testing.TB, s store.Store) []string {
	tb.Helper()
	ctx := tb.Context()
	must(tb, s.CreateHub(ctx, iotHub("hub-iot")))
	must(tb, s.CreateHub(ctx, policyHub("hub-eh")))
	must(tb, s.CreateHub(ctx, domain.Hub{Name: "hub-gone"}))
	for i := range 30 {
		d := device(fmt.Sprintf("dev-%02d", i), []string{"hub-iot", "hub-eh"}[i%2])
		switch i % 3 {
		case 1:
			d.Modules = nil
			d.Auth = domain.Credential{Type: domain.CredES256, PublicKey: testPEM}
		case 2:
			d.Modules = []domain.Module{}
			d.Auth = domain.Credential{Type: domain.CredHS256, Secret: []byte{}}
			d.Disabled = true
			d.CreatedAt, d.UpdatedAt = time.Time{}, time.Time{}
		}
		// A gateway and its children: the relation survives reopening like any field.
		switch i {
		case 3:
			d.Gateway = true
		case 7, 11:
			d.Parent = "dev-03"
		}
		must(tb, s.CreateDevice(ctx, d))
	}
	_, err := s.UpdateDevice(ctx, "dev-13", func(d *domain.Device) error { d.Parent = "dev-03"; return nil })
	must(tb, err)
	for i := 0; i < 30; i += 4 {
		_, err := s.UpdateDevice(ctx, fmt.Sprintf("dev-%02d", i), func(d *domain.Device) error {
			d.Modules = append(d.Modules, domain.Module{ID: "added", PrimaryKey: "YWRkZWQ="})
			d.Disabled = !d.Disabled
			d.UpdatedAt = t1.Add(time.Hour)
			return nil
		})
		must(tb, err)
	}
	for i := 0; i < 30; i += 5 {
		must(tb, s.DeleteDevice(ctx, fmt.Sprintf("dev-%02d", i)))
	}
	must(tb, s.DeleteHub(ctx, "hub-gone"))
	must(tb, s.PutSetting(ctx, "admin-token-hash", []byte("first")))
	must(tb, s.PutSetting(ctx, "admin-token-hash", []byte("second")))
	must(tb, s.PutSetting(ctx, "empty", nil))
	must(tb, s.PutSetting(ctx, "binary", []byte{0x00, 0x01, 0xff}))
	return []string{"admin-token-hash", "empty", "binary", "never-set"}
}

// contents is everything observable in a store, for comparing two of them.
type contents struct {
	Hubs     []domain.Hub
	Devices  []domain.Device
	Settings map[string][]byte
}

func dump(tb testing.TB, s store.Store, settings ...string) contents {
	tb.Helper()
	ctx := tb.Context()
	var c contents
	var err error
	if c.Hubs, err = s.ListHubs(ctx); err != nil {
		tb.Fatalf("ListHubs: got error %v, want nil", err)
	}
	cursor := ""
	for {
		page, err := s.ListDevices(ctx, cursor, 7)
		if err != nil {
			tb.Fatalf("ListDevices: got error %v, want nil", err)
		}
		c.Devices = append(c.Devices, page.Devices...)
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	c.Settings = map[string][]byte{}
	for _, name := range settings {
		v, err := s.GetSetting(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			tb.Fatalf("GetSetting(%q): got error %v, want nil", name, err)
		default:
			c.Settings[name] = v
		}
	}
	return c
}

// encode renders c as JSON, which tells nil from empty slices and keeps time zones,
// so equal encodings mean an exact round trip.
func (c contents) encode(tb testing.TB) string {
	tb.Helper()
	b, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// mustCheckClean fails the test unless s's consistency check finds nothing.
func mustCheckClean(tb testing.TB, s *filestore.Store) {
	tb.Helper()
	rep, err := s.Check(tb.Context())
	if err != nil {
		tb.Fatalf("Check: got error %v, want nil", err)
	}
	if err := rep.Err(); err != nil {
		tb.Errorf("Check: got %v, want no problems", err)
	}
}

// slogTo logs text to w.
func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
