package filestore_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

var fuzzKey = bytes.Repeat([]byte{0x5a}, filestore.KeySize)

// checkReplayable holds a file that replays to what Open promises: cutting it at the
// end replay reports changes nothing, a compaction of it holds the same records, and
// Open on disk succeeds and serves exactly those records. The fuzzer minimises every
// new input, mostly into truncations, so only complete files go to disk; otherwise the
// run is spent on fsyncs. TestTornFinalFrame covers cutting torn files on disk.
func checkReplayable(t *testing.T, dir string, data []byte, want string, end int64) {
	t.Helper()
	got, end2, err := filestore.ReplayForTest(data[:end], fuzzKey)
	if err != nil || got != want || end2 != end {
		t.Fatalf("replay of the file cut at %d: got end %d, error %v, contents\n%s\nwant end %d, nil, contents\n%s", end, end2, err, got, end, want)
	}
	snap, err := filestore.SnapshotForTest(data, fuzzKey)
	if err != nil {
		t.Fatalf("snapshot: got error %v, want nil", err)
	}
	if got, _, err := filestore.ReplayForTest(snap, fuzzKey); err != nil || got != want {
		t.Fatalf("replay of snapshot: got error %v, contents\n%s\nwant nil,\n%s", err, got, want)
	}
	if end != int64(len(data)) {
		return
	}

	path := filepath.Join(dir, "store.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := filestore.Open(path, fuzzKey, filestore.WithLogger(discardLogger))
	if err != nil {
		t.Fatalf("Open of a file that replays: got error %v, want nil", err)
	}
	defer s.Close()
	if got := dump(t, s, filestore.SettingNamesForTest(s)...).encode(t); got != want {
		t.Fatalf("Open: got contents\n%s\nwant\n%s", got, want)
	}
}

// FuzzReplay feeds arbitrary bytes as the store file: it must either open, holding
// exactly what replay found, or fail; never panic.
func FuzzReplay(f *testing.F) {
	// Seeds stay small for the same reason: minimising a 3 KiB file takes the whole run.
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	s, err := filestore.Open(path, fuzzKey, filestore.WithLogger(discardLogger))
	if err != nil {
		f.Fatal(err)
	}
	ctx := f.Context()
	must(f, s.CreateHub(ctx, domain.Hub{Name: "h"}))
	must(f, s.CreateDevice(ctx, domain.Device{ID: "d", Hub: "h", Modules: []domain.Module{{ID: "m"}}}))
	must(f, s.PutSetting(ctx, "s", []byte("v")))
	must(f, s.DeleteDevice(ctx, "d"))
	must(f, s.Close())
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
