package filestore_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// v1Fixture is a v1 file written by the v1 writer and what Open must find in it.
type v1Fixture struct {
	path, want string
	key, data  []byte
	settings   []string
}

// writeV1 writes a v1 file holding what populate leaves (gateway relations, nil and
// empty slices, zone-carrying times, settings), in a snapshot followed by delete
// frames, as a long-running v1 store leaves it.
func writeV1(t *testing.T) v1Fixture {
	t.Helper()
	key := newKey(t)
	src := mustOpen(t, storePath(t), key)
	settings := populate(t, src)
	c := dump(t, src, settings...)
	mustClose(t, src)
	extra := []domain.Device{device("doomed-1", c.Hubs[0].Name), device("doomed-2", c.Hubs[0].Name)}
	path := storePath(t)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	must(t, filestore.WriteV1ForTest(path, key, c.Hubs, append(c.Devices, extra...), c.Settings, "doomed-1", "doomed-2"))
	data, err := os.ReadFile(path)
	must(t, err)
	return v1Fixture{path: path, want: c.encode(t), key: key, data: data, settings: settings}
}

// checkMigrated opens f's path and checks it holds f's records in the new format,
// with the v1 file kept as the backup.
func checkMigrated(t *testing.T, f v1Fixture) {
	t.Helper()
	s := mustOpen(t, f.path, f.key)
	if got := dump(t, s, f.settings...).encode(t); got != f.want {
		t.Errorf("contents after migration:\ngot  %s\nwant %s", got, f.want)
	}
	if got := childIDs(t, s, "dev-03"); strings.Join(got, ",") != "dev-07,dev-11,dev-13" {
		t.Errorf("children of dev-03 after migration: got %q, want dev-07, dev-11, dev-13", got)
	}
	mustCheckClean(t, s)
	mustClose(t, s)
	backup, err := os.ReadFile(filestore.BackupPath(f.path))
	must(t, err)
	if !bytes.Equal(backup, f.data) {
		t.Error("backup: got bytes other than the v1 file's")
	}
	if _, err := os.Stat(f.path + ".migrating"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file: got stat error %v, want it gone", err)
	}
}

func TestMigrateV1(t *testing.T) {
	f := writeV1(t)
	var log bytes.Buffer
	s, err := filestore.Open(f.path, f.key, filestore.WithLogger(slogTo(&log)))
	must(t, err)
	mustClose(t, s)
	if !strings.Contains(log.String(), "migrated the v1 file") {
		t.Errorf("log: got %q, want the migration logged", log.String())
	}
	checkMigrated(t, f)
	// A second Open finds the new format and leaves the backup alone.
	checkMigrated(t, f)
}

// TestMigrateCrashAtEachStep fails the migration at each step, as a crash there
// would leave it, and checks that path still holds the v1 file untouched or the
// complete new one, and that the next Open ends with everything migrated.
func TestMigrateCrashAtEachStep(t *testing.T) {
	tests := []struct {
		step      string
		wantStill bool // path still holds the v1 file
	}{
		{"write", true},
		{"sync", true},
		{"link", true},
		{"rename", true},
		{"syncdir", false},
	}
	for _, tc := range tests {
		t.Run(tc.step, func(t *testing.T) {
			f := writeV1(t)
			crash := errors.New("crash")
			s, err := filestore.Open(f.path, f.key, filestore.WithLogger(discardLogger),
				filestore.WithFaultForTest(func(step string) error {
					if step == tc.step {
						return crash
					}
					return nil
				}))
			if err == nil {
				s.Close()
				t.Fatalf("Open with a crash at %s: got nil error", tc.step)
			}
			if !errors.Is(err, crash) {
				t.Fatalf("Open with a crash at %s: got error %v, want %v", tc.step, err, crash)
			}
			data, err := os.ReadFile(f.path)
			must(t, err)
			if still := bytes.Equal(data, f.data); still != tc.wantStill {
				t.Errorf("path holds the v1 file after a crash at %s: got %v, want %v", tc.step, still, tc.wantStill)
			}
			checkMigrated(t, f)
		})
	}
}

func TestMigrateTornFinalFrame(t *testing.T) {
	f := writeV1(t)
	// What a crash during a v1 append leaves: part of a frame.
	torn := append(bytes.Clone(f.data), 0, 0, 0, 40, 1, 2, 3)
	must(t, os.WriteFile(f.path, torn, 0o600))
	f.data = torn
	checkMigrated(t, f)
}

func TestMigrateRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *v1Fixture) (cleanup func())
		key   func(f v1Fixture) []byte
		want  error
	}{
		{"wrong key", nil, func(v1Fixture) []byte { return newKey(t) }, filestore.ErrWrongKey},
		{"damaged frame before the last", func(t *testing.T, f *v1Fixture) func() {
			flipByte(t, f.path, 200)
			return nil
		}, nil, filestore.ErrCorrupt},
		{"a v1 process holds the file", func(t *testing.T, f *v1Fixture) func() {
			h, err := os.Open(f.path)
			must(t, err)
			must(t, syscall.Flock(int(h.Fd()), syscall.LOCK_EX))
			return func() { h.Close() }
		}, nil, filestore.ErrLocked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := writeV1(t)
			if tc.setup != nil {
				if cleanup := tc.setup(t, &f); cleanup != nil {
					defer cleanup()
				}
			}
			before, err := os.ReadFile(f.path)
			must(t, err)
			key := f.key
			if tc.key != nil {
				key = tc.key(f)
			}
			s, err := filestore.Open(f.path, key, filestore.WithLogger(discardLogger))
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: got error %v, want %v", err, tc.want)
			}
			after, err := os.ReadFile(f.path)
			must(t, err)
			if !bytes.Equal(after, before) {
				t.Error("Open that refused to migrate changed the file")
			}
			for _, p := range []string{f.path + ".migrating", filestore.BackupPath(f.path)} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: got stat error %v, want none written", filepath.Base(p), err)
				}
			}
		})
	}
}

// TestMigrateManyFrames migrates a v1 file larger than one migration transaction.
func TestMigrateManyFrames(t *testing.T) {
	key := newKey(t)
	path := storePath(t)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	hub := iotHub("hub-a")
	var devices []domain.Device
	for i := range 25_000 {
		devices = append(devices, domain.Device{ID: fmt.Sprintf("d%06d", i), Hub: "hub-a", PrimaryKey: "cA=="})
	}
	must(t, filestore.WriteSnapshotForTest(path, key, []domain.Hub{hub}, devices))
	s := mustOpen(t, path, key)
	rep, err := s.Check(t.Context())
	must(t, err)
	if rep.Devices != len(devices) || rep.Err() != nil {
		t.Errorf("Check after migration: got %d devices, %v; want %d, nil", rep.Devices, rep.Err(), len(devices))
	}
}

// TestMigrateRaceWithAnotherOpen has a second Open find the v1 file, then lose the
// race for its lock to an Open that migrates it and starts writing. The loser must
// see that path is no longer the file it opened and meet the new file's lock, not
// migrate its stale copy of the v1 file over the winner's file (losing the winner's
// acknowledged writes) or replace the backup with the new file.
func TestMigrateRaceWithAnotherOpen(t *testing.T) {
	f := writeV1(t)
	opened, proceed := make(chan struct{}), make(chan struct{})
	type result struct {
		s   *filestore.Store
		err error
	}
	late := make(chan result, 1)
	go func() {
		s, err := filestore.Open(f.path, f.key, filestore.WithLogger(discardLogger),
			filestore.WithFaultForTest(func(step string) error {
				if step == "lock" {
					close(opened)
					<-proceed
				}
				return nil
			}))
		late <- result{s, err}
	}()
	<-opened // the late Open holds the v1 file open, not yet locked
	winner := mustOpen(t, f.path, f.key)
	must(t, winner.PutSetting(t.Context(), "acknowledged", []byte("after the migration")))
	close(proceed)
	r := <-late
	if r.err == nil {
		r.s.Close()
	}
	if !errors.Is(r.err, filestore.ErrLocked) {
		t.Errorf("Open that lost the migration race: got error %v, want %v", r.err, filestore.ErrLocked)
	}
	mustClose(t, winner)
	s := mustOpen(t, f.path, f.key)
	if got, err := s.GetSetting(t.Context(), "acknowledged"); err != nil || string(got) != "after the migration" {
		t.Errorf("setting written after the migration: got %q, %v; want it kept", got, err)
	}
	mustClose(t, s)
	checkMigrated(t, f)
}
