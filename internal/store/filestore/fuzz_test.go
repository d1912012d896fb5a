package filestore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

var fuzzKey = bytes.Repeat([]byte{0x5a}, filestore.KeySize)

// checkReplayable holds a v1 file that replays to what migration promises: cutting it
// at the end replay reports changes nothing, and Open on disk migrates it and serves
// exactly those records. The fuzzer minimises every new input, mostly into
// truncations, so only complete files go to disk; otherwise the run is spent on
// fsyncs. TestMigrateTornFinalFrame covers migrating torn files on disk.
func checkReplayable(t *testing.T, dir string, data []byte, want string, end int64) {
	t.Helper()
	got, end2, err := filestore.ReplayForTest(data[:end], fuzzKey)
	if err != nil || got != want || end2 != end {
		t.Fatalf("replay of the file cut at %d: got end %d, error %v, contents\n%s\nwant end %d, nil, contents\n%s", end, end2, err, got, end, want)
	}
	if end != int64(len(data)) {
		return
	}
	path := filepath.Join(dir, "store.db")
	for _, p := range []string{path, filestore.BackupPath(path)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := filestore.Open(path, fuzzKey, filestore.WithLogger(discardLogger))
	if err != nil {
		t.Fatalf("Open of a v1 file that replays: got error %v, want nil", err)
	}
	defer s.Close()
	if got := dump(t, s, filestore.SettingNamesForTest(data, fuzzKey)...).encode(t); got != want {
		t.Fatalf("Open: got contents\n%s\nwant\n%s", got, want)
	}
}

// FuzzReplay feeds arbitrary bytes as a v1 store file: it must either migrate,
// holding exactly what replay found, or fail; never panic.
func FuzzReplay(f *testing.F) {
	// Seeds stay small: minimising a 3 KiB file takes the whole run.
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	hub := domain.Hub{Name: "h"}
	must(f, filestore.WriteV1ForTest(path, fuzzKey, []domain.Hub{hub},
		[]domain.Device{{ID: "d", Hub: "h", Modules: []domain.Module{{ID: "m"}}}},
		map[string][]byte{"s": []byte("v")}, "d"))
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-7])
	f.Add(seed[:100])
	f.Add(seed[:74])
	f.Add(append(bytes.Clone(seed), make([]byte, 16)...))
	f.Add([]byte("TKSVCDB\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		want, end, err := filestore.ReplayForTest(data, fuzzKey)
		if err != nil {
			return
		}
		checkReplayable(t, dir, data, want, end)
	})
}

// FuzzRecords seals arbitrary plaintext into an otherwise valid file, reaching the
// record decoding and validation that authentication keeps FuzzReplay away from. An
// authentic frame that cannot be applied must fail with ErrCorrupt, never be skipped.
func FuzzRecords(f *testing.F) {
	seeds := []string{
		`{"ops":[{"op":"putHub","hub":{"name":"h","createdAt":"2025-01-01T00:00:00Z"}},` +
			`{"op":"putDevice","device":{"id":"d","hub":"h","modules":[{"id":"m"}],"secret":"AAE=","createdAt":"0001-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00.5+02:00"}}]}`,
		`{"ops":[{"op":"putHub","hub":{"name":"h","createdAt":"2025-01-01T00:00:00Z"}},{"op":"deleteHub","name":"h"}]}`,
		`{"ops":[{"op":"putDevice","device":{"id":"d","hub":"nope","modules":null,"secret":null,"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"}}]}`,
		`{"ops":[{"op":"deleteDevice","name":"d"}]}`,
		`{"ops":[{"op":"putSetting","name":"s","value":"dg=="}]}`,
		`{"ops":[{"op":"putDevice"}]}`,
		`{"ops":[{"op":"dropTable"}]}`,
		`{"ops":[]}`,
		`{"ops":[{"op":"putSetting","name":"s","extra":1}]}`,
		`{"ops":[{"op":"putSetting","name":"s"}]} trailing`,
		`null`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, payload []byte) {
		file, err := filestore.EncodeFileForTest(fuzzKey, payload)
		if err != nil {
			return
		}
		want, end, err := filestore.ReplayForTest(file, fuzzKey)
		if err != nil {
			if !errors.Is(err, filestore.ErrCorrupt) {
				t.Fatalf("replay: got error %v, want %v", err, filestore.ErrCorrupt)
			}
			return
		}
		checkReplayable(t, dir, file, want, end)
	})
}

// FuzzDeviceRecord seals arbitrary plaintext as a stored device, reaching the record
// decoder behind the authentication: it must either fail with ErrCorrupt or give a
// device that stores and reads back unchanged.
func FuzzDeviceRecord(f *testing.F) {
	seeds := []string{
		`{"id":"d","hub":"h","modules":[{"id":"m"}],"secret":"AAE=","createdAt":"0001-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00.5+02:00"}`,
		`{"id":"d","hub":"h","parent":"gw","gateway":true,"modules":null,"secret":null,"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"}`,
		`{"id":"d","extra":1}`,
		`{"id":"d"} trailing`,
		`null`,
		``,
	}
	for _, s := range seeds {
		f.Add("d", []byte(s))
	}
	f.Fuzz(func(t *testing.T, id string, plaintext []byte) {
		d, again, err := filestore.DecodeDeviceForTest(fuzzKey, id, plaintext)
		if err != nil {
			if !errors.Is(err, filestore.ErrCorrupt) {
				t.Fatalf("decode: got error %v, want %v", err, filestore.ErrCorrupt)
			}
			return
		}
		if recordJSON(t, d) != recordJSON(t, again) {
			t.Fatalf("device does not store and read back unchanged:\n%+v\n%+v", d, again)
		}
	})
}

// FuzzSealedValue opens arbitrary bytes as a sealed value: only ErrCorrupt, never a
// panic or a value (nothing but the key's holder can make one that authenticates).
func FuzzSealedValue(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 28))
	f.Add(bytes.Repeat([]byte{1}, 100))
	f.Fuzz(func(t *testing.T, sealed []byte) {
		v, err := filestore.OpenSealedForTest(fuzzKey, "devices", "d", sealed)
		if !errors.Is(err, filestore.ErrCorrupt) || v != nil {
			t.Fatalf("open: got %q, %v; want nil, %v", v, err, filestore.ErrCorrupt)
		}
	})
}

func recordJSON(t *testing.T, d domain.Device) string {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
