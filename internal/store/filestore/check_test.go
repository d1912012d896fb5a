package filestore_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// TestCheck damages an open store the ways a bug, a disk or another process could,
// and wants Check to name each damage; an undamaged store must check clean.
func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		// damage changes the store (open at path) behind its API; nil leaves it whole.
		damage func(t *testing.T, s *filestore.Store, path string, midFrame int64)
		// want are substrings of the problems expected, each in some problem.
		want []string
	}{
		{"clean", nil, nil},
		{"clean after a compaction", func(t *testing.T, s *filestore.Store, _ string, _ int64) {
			must(t, s.Compact())
		}, nil},
		{"file cut short", func(t *testing.T, _ *filestore.Store, path string, _ int64) {
			must(t, os.Truncate(path, fileSize(t, path)-5))
		}, []string{"but the acknowledged writes end at", `setting "binary": held in memory but not in the file`}},
		{"bytes appended behind the store's back", func(t *testing.T, _ *filestore.Store, path string, _ int64) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			must(t, err)
			_, err = f.Write([]byte("not a frame"))
			must(t, err)
			must(t, f.Close())
		}, []string{"but the acknowledged writes end at", "ends in 11 bytes that are not a whole frame"}},
		{"an acknowledged frame damaged", func(t *testing.T, _ *filestore.Store, path string, midFrame int64) {
			flipByte(t, path, midFrame)
		}, []string{"does not replay", "file is corrupt"}},
		{"a hub lost from memory", func(t *testing.T, s *filestore.Store, _ string, _ int64) {
			filestore.DropHubFromMemoryForTest(s, "hub-eh")
		}, []string{`device "dev-01": its hub "hub-eh" does not exist`, `hub "hub-eh": in the file but not held in memory`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := storePath(t)
			s := mustOpen(t, path, newKey(t))
			must(t, s.CreateHub(t.Context(), iotHub("first")))
			midFrame := fileSize(t, path) - 20 // inside the first hub's frame, with frames after it
			populate(t, s)
			if tt.damage != nil {
				tt.damage(t, s, path, midFrame)
			}
			rep, err := s.Check(t.Context())
			if err != nil {
				t.Fatalf("Check: got error %v, want a report", err)
			}
			if tt.want == nil && (rep.Hubs != 3 || rep.Devices != 24) {
				t.Errorf("counted: got %d hubs and %d devices, want 3 and 24", rep.Hubs, rep.Devices)
			}
			if len(rep.Leftovers) > 0 {
				t.Errorf("leftovers: got %v, want none", rep.Leftovers)
			}
			if tt.want == nil {
				if err := rep.Err(); err != nil {
					t.Errorf("got %v, want a clean report", err)
				}
				return
			}
			if err := rep.Err(); !errors.Is(err, store.ErrInconsistent) {
				t.Fatalf("Err: got %v, want ErrInconsistent", err)
			}
			for _, w := range tt.want {
				if !hasProblem(rep, w) {
					t.Errorf("no problem mentions %q; got %v", w, rep.Problems)
				}
			}
		})
	}
}

func TestCheckClosed(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	mustClose(t, s)
	if _, err := s.Check(t.Context()); !errors.Is(err, filestore.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func hasProblem(rep store.Report, substr string) bool {
	for _, p := range rep.Problems {
		if strings.Contains(p.String(), substr) {
			return true
		}
	}
	return false
}

func flipByte(tb testing.TB, path string, off int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		tb.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		tb.Fatal(err)
	}
}
