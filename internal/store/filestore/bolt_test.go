package filestore_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

func TestReopenPreservesEverything(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	settings := populate(t, s)
	want := dump(t, s, settings...).encode(t)
	mustClose(t, s)
	for _, step := range []string{"reopen", "reopen again"} {
		t.Run(step, func(t *testing.T) {
			s := mustOpen(t, path, key)
			defer mustClose(t, s)
			if got := dump(t, s, settings...).encode(t); got != want {
				t.Errorf("contents:\ngot  %s\nwant %s", got, want)
			}
			mustCheckClean(t, s)
		})
	}
}

// editBolt changes the closed store file at path with bbolt directly, as someone
// editing it behind the store's back could.
func editBolt(tb testing.TB, path string, fn func(tx *bolt.Tx) error) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	must(tb, err)
	must(tb, db.Update(fn))
	must(tb, db.Close())
}

func TestOpenDamagedFile(t *testing.T) {
	tests := []struct {
		name string
		// damage changes the closed file at path.
		damage func(t *testing.T, path string)
		want   error
	}{
		{"not a store file", func(t *testing.T, path string) {
			junk := make([]byte, 64<<10)
			rand.Read(junk)
			must(t, os.WriteFile(path, junk, 0o600))
		}, filestore.ErrCorrupt},
		{"cut to 100 bytes", func(t *testing.T, path string) { must(t, os.Truncate(path, 100)) }, filestore.ErrCorrupt},
		{"both meta pages damaged", func(t *testing.T, path string) {
			flipByte(t, path, 0x30)
			flipByte(t, path, 4096+0x30)
		}, filestore.ErrCorrupt},
		{"key check damaged", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error {
				m := tx.Bucket([]byte("meta"))
				v := bytes.Clone(m.Get([]byte("keycheck")))
				v[len(v)-1] ^= 1
				return m.Put([]byte("keycheck"), v)
			})
		}, filestore.ErrCorrupt},
		{"meta bucket missing", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("meta")) })
		}, filestore.ErrCorrupt},
		{"devices bucket missing", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("devices")) })
		}, filestore.ErrCorrupt},
		{"unknown format", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("9")) })
		}, filestore.ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, key := populatedFile(t)
			tc.damage(t, path)
			s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: got error %v, want %v", err, tc.want)
			}
			if errors.Is(err, filestore.ErrWrongKey) {
				t.Errorf("Open: got %v, want it not to match ErrWrongKey", err)
			}
		})
	}
}

func flipByte(tb testing.TB, path string, off int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(tb, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	must(tb, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	must(tb, err)
}

// TestSwappedValuesDoNotAuthenticate moves one device's sealed record under another's
// ID: the record is bound to its key, so reading it fails and Check reports it.
func TestSwappedValuesDoNotAuthenticate(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	populate(t, s)
	must(t, filestore.CorruptDeviceForTest(s, "dev-01", "dev-02"))
	if _, err := s.GetDevice(t.Context(), "dev-01"); !errors.Is(err, filestore.ErrCorrupt) {
		t.Errorf("GetDevice of the swapped record: got error %v, want %v", err, filestore.ErrCorrupt)
	}
	rep, err := s.Check(t.Context())
	must(t, err)
	if !hasProblem(rep, `device "dev-01"`) {
		t.Errorf("Check: got problems %v, want one about dev-01", rep.Problems)
	}
	if _, err := s.GetDevice(t.Context(), "dev-02"); err != nil {
		t.Errorf("GetDevice of an untouched record: got error %v, want nil", err)
	}
}

func hasProblem(rep store.Report, record string) bool {
	return slices.ContainsFunc(rep.Problems, func(p store.Problem) bool { return p.Record == record })
}

func TestCheckFindsIndexDamage(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(tx *bolt.Tx) error
		record string
	}{
		{"hub count off", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("hubcount")).Put([]byte("hub-iot"), make([]byte, 8))
		}, `hub "hub-iot"`},
		{"child missing from the parent index", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("children")).Bucket([]byte("dev-03")).Delete([]byte("dev-07"))
		}, `device "dev-07"`},
		{"stray child in the parent index", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("children")).Bucket([]byte("dev-03")).Put([]byte("dev-01"), nil)
		}, `device "dev-01"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, key := populatedFile(t)
			editBolt(t, path, tc.edit)
			s := mustOpen(t, path, key)
			rep, err := s.Check(t.Context())
			must(t, err)
			if !hasProblem(rep, tc.record) {
				t.Errorf("Check: got problems %v, want one about %s", rep.Problems, tc.record)
			}
		})
	}
}

func childIDs(tb testing.TB, s *filestore.Store, gateway string) []string {
	tb.Helper()
	var ids []string
	cursor := ""
	for {
		page, err := s.ListChildren(tb.Context(), gateway, cursor, 2)
		must(tb, err)
		if len(page.Devices) > 2 {
			tb.Fatalf("ListChildren: got a page of %d, want at most 2", len(page.Devices))
		}
		for _, d := range page.Devices {
			if d.Parent != gateway {
				tb.Errorf("ListChildren(%q): got %q with parent %q", gateway, d.ID, d.Parent)
			}
			ids = append(ids, d.ID)
		}
		if page.Next == "" {
			return ids
		}
		cursor = page.Next
	}
}

func TestParentIndexFollowsChanges(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	for _, id := range []string{"gw-1", "gw-2"} {
		d := device(id, "hub-a")
		d.Gateway = true
		must(t, s.CreateDevice(ctx, d))
	}
	for i := range 5 {
		d := device(fmt.Sprintf("leaf-%d", i), "hub-a")
		d.Parent = "gw-1"
		must(t, s.CreateDevice(ctx, d))
	}
	setParent := func(id, parent string) func() error {
		return func() error {
			_, err := s.UpdateDevice(ctx, id, func(d *domain.Device) error { d.Parent = parent; return nil })
			return err
		}
	}
	steps := []struct {
		name       string
		do         func() error
		gw1, gw2   []string
		wantChange bool
	}{
		{"created", func() error { return nil }, []string{"leaf-0", "leaf-1", "leaf-2", "leaf-3", "leaf-4"}, nil, false},
		{"moved to gw-2", setParent("leaf-1", "gw-2"), []string{"leaf-0", "leaf-2", "leaf-3", "leaf-4"}, []string{"leaf-1"}, true},
		{"parent dropped", setParent("leaf-2", ""), []string{"leaf-0", "leaf-3", "leaf-4"}, []string{"leaf-1"}, true},
		{"deleted", func() error { return s.DeleteDevice(ctx, "leaf-3") }, []string{"leaf-0", "leaf-4"}, []string{"leaf-1"}, true},
		{"update keeping the parent", setParent("leaf-0", "gw-1"), []string{"leaf-0", "leaf-4"}, []string{"leaf-1"}, false},
		{"last child of gw-2 moved", setParent("leaf-1", "gw-1"), []string{"leaf-0", "leaf-1", "leaf-4"}, nil, true},
		{"failed update", func() error {
			_, err := s.UpdateDevice(ctx, "leaf-4", func(d *domain.Device) error { d.Parent = "gw-2"; return errors.New("refused") })
			if err == nil {
				return errors.New("UpdateDevice: got nil error, want the fn's")
			}
			return nil
		}, []string{"leaf-0", "leaf-1", "leaf-4"}, nil, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			must(t, st.do())
			for _, tc := range []struct {
				gw   string
				want []string
			}{{"gw-1", st.gw1}, {"gw-2", st.gw2}, {"leaf-0", nil}, {"absent", nil}} {
				if got := childIDs(t, s, tc.gw); !slices.Equal(got, tc.want) {
					t.Errorf("children of %s: got %q, want %q", tc.gw, got, tc.want)
				}
			}
			mustCheckClean(t, s)
		})
	}
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if got, want := childIDs(t, s, "gw-1"), steps[len(steps)-1].gw1; !slices.Equal(got, want) {
		t.Errorf("children of gw-1 after reopen: got %q, want %q", got, want)
	}
}

// TestConcurrentCreatesShareCommits checks the group commit: concurrent CreateDevice
// calls are carried by fewer transactions (fsyncs) than calls, every acknowledged one
// is there after reopening, and a refused one (ErrExists) in a group does not fail
// the others.
func TestConcurrentCreatesShareCommits(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	must(t, s.CreateDevice(ctx, device("dup", "hub-a")))
	c0, w0 := s.BatchStats()
	const writers, each = 32, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range each {
				id := fmt.Sprintf("dev-%02d-%d", w, i)
				if i == 3 {
					id = "dup"
				}
				err := s.CreateDevice(ctx, device(id, "hub-a"))
				if id == "dup" {
					if !errors.Is(err, store.ErrExists) {
						errs <- fmt.Errorf("CreateDevice(dup): got error %v, want %v", err, store.ErrExists)
					}
					continue
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c1, w1 := s.BatchStats()
	commits, writes := c1-c0, w1-w0
	if want := int64(writers * (each - 1)); writes != want {
		t.Errorf("batched writes: got %d, want %d", writes, want)
	}
	if commits*2 > writes {
		t.Errorf("commits: got %d for %d writes, want concurrent writes to share commits", commits, writes)
	}
	t.Logf("%d writes in %d commits", writes, commits)
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if got, want := len(dump(t, s).Devices), 1+writers*(each-1); got != want {
		t.Errorf("devices after reopen: got %d, want %d", got, want)
	}
	mustCheckClean(t, s)
}

// TestFailedWriteDoesNotFailItsGroup sends, among concurrent creates, one that fails
// after it has started writing (an ID longer than bbolt's key limit): its group is
// rolled back and retried write by write, so only that create fails and every other
// one is stored, with the indexes intact.
func TestFailedWriteDoesNotFailItsGroup(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	must(t, s.CreateDevice(ctx, device("gw", "hub-a")))
	huge := strings.Repeat("x", bolt.MaxKeySize+1)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			<-start
			id := fmt.Sprintf("dev-%02d", i)
			if i == 20 {
				id = huge
			}
			d := device(id, "hub-a")
			d.Parent = "gw"
			errs[i] = s.CreateDevice(ctx, d)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 20) {
			t.Errorf("create %d: got error %v, want one only for the over-long ID", i, err)
		}
	}
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if got := len(childIDs(t, s, "gw")); got != len(errs)-1 {
		t.Errorf("children after reopen: got %d, want %d", got, len(errs)-1)
	}
	mustCheckClean(t, s)
}

// TestOfflineCompaction compacts a closed store file with bbolt's own compaction (what
// `bbolt compact` runs): values are sealed to their bucket and key, not to where they
// lie in the file, so the compacted file opens with the same key, holds the same
// records and checks clean, and is smaller once most records were deleted.
func TestOfflineCompaction(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	settings := populate(t, s)
	ctx := t.Context()
	for i := range 2000 {
		must(t, s.CreateDevice(ctx, device(fmt.Sprintf("bulk-%04d", i), "hub-iot")))
	}
	for i := range 2000 {
		must(t, s.DeleteDevice(ctx, fmt.Sprintf("bulk-%04d", i)))
	}
	want := dump(t, s, settings...).encode(t)
	mustClose(t, s)

	compacted := path + ".compact"
	src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	must(t, err)
	dst, err := bolt.Open(compacted, 0o600, nil)
	must(t, err)
	must(t, bolt.Compact(dst, src, 1<<20))
	must(t, dst.Close())
	must(t, src.Close())
	before, after := fileSize(t, path), fileSize(t, compacted)
	if after >= before {
		t.Errorf("compacted file: got %d bytes, want fewer than %d", after, before)
	}
	must(t, os.Rename(compacted, path))

	s = mustOpen(t, path, key)
	if got := dump(t, s, settings...).encode(t); got != want {
		t.Errorf("contents after compaction:\ngot  %s\nwant %s", got, want)
	}
	mustCheckClean(t, s)
}

// TestDeviceCacheFollowsWrites reads devices through caches of several sizes
// (including none, and one smaller than the devices read): a read after a write
// returns the written record, never the one the cache held before.
func TestDeviceCacheFollowsWrites(t *testing.T) {
	for _, size := range []int{0, 1, filestore.DefaultDeviceCache} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			s := mustOpen(t, storePath(t), newKey(t), filestore.WithDeviceCache(size))
			ctx := t.Context()
			must(t, s.CreateHub(ctx, iotHub("hub-a")))
			for _, id := range []string{"dev-1", "dev-2"} {
				must(t, s.CreateDevice(ctx, device(id, "hub-a")))
			}
			steps := []struct {
				name    string
				write   func() error
				id      string
				wantKey string // "" = ErrNotFound
			}{
				{"read", func() error { return nil }, "dev-1", device("dev-1", "").PrimaryKey},
				{"update", func() error {
					_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { d.PrimaryKey = "bmV3"; return nil })
					return err
				}, "dev-1", "bmV3"},
				{"other device", func() error { return nil }, "dev-2", device("dev-2", "").PrimaryKey},
				{"failed update", func() error {
					_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { d.PrimaryKey = "bm8="; return errors.New("no") })
					if err == nil {
						return errors.New("UpdateDevice: got nil error, want the fn's")
					}
					return nil
				}, "dev-1", "bmV3"},
				{"delete", func() error { return s.DeleteDevice(ctx, "dev-1") }, "dev-1", ""},
				{"recreate", func() error { return s.CreateDevice(ctx, device("dev-1", "hub-a")) }, "dev-1", device("dev-1", "").PrimaryKey},
			}
			for _, st := range steps {
				must(t, st.write())
				for range 2 { // a miss, then (with a cache) a hit
					d, err := s.GetDevice(ctx, st.id)
					switch {
					case st.wantKey == "" && !errors.Is(err, store.ErrNotFound):
						t.Errorf("%s: GetDevice(%s): got error %v, want %v", st.name, st.id, err, store.ErrNotFound)
					case st.wantKey != "" && (err != nil || d.PrimaryKey != st.wantKey):
						t.Errorf("%s: GetDevice(%s): got key %q, error %v; want %q", st.name, st.id, d.PrimaryKey, err, st.wantKey)
					}
				}
			}
		})
	}
}

// TestOpenFileCutShort opens a store file cut short behind its last page, as a partial
// copy or restore leaves it. bbolt maps the missing pages, and the first read of one
// kills the process (SIGBUS) inside bolt.Open; Open must refuse the file with
// ErrCorrupt instead, whatever part of it is missing.
func TestOpenFileCutShort(t *testing.T) {
	path, _ := populatedFile(t)
	var end int64
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	must(t, err)
	must(t, db.View(func(tx *bolt.Tx) error { end = tx.Size(); return nil }))
	must(t, db.Close())
	page := int64(os.Getpagesize())
	for _, keep := range []int64{end - page, end / 2, 6 * page, 3 * page} {
		t.Run(fmt.Sprintf("%d of %d bytes", keep, end), func(t *testing.T) {
			path, key := populatedFile(t)
			must(t, os.Truncate(path, keep))
			s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, filestore.ErrCorrupt) {
				t.Fatalf("Open: got error %v, want %v", err, filestore.ErrCorrupt)
			}
		})
	}
}

// TestPagePointerOutsideTheFile: a damaged branch of the tree that points far past the
// file (a flipped bit in a bucket's root page ID) must make reads and writes fail with
// ErrCorrupt, not kill the process: bbolt follows the pointer into unmapped memory,
// where the fault is fatal unless the goroutine asked for it as a panic.
func TestPagePointerOutsideTheFile(t *testing.T) {
	path, key := populatedFile(t)
	var root uint64
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	must(t, err)
	must(t, db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket([]byte("devices")).Root())
		return nil
	}))
	must(t, db.Close())
	if root == 0 {
		t.Fatal("the devices bucket is inline: no root page to damage")
	}
	b, err := os.ReadFile(path)
	must(t, err)
	old := binary.LittleEndian.AppendUint64([]byte("devices"), root)
	if !bytes.Contains(b, old) {
		t.Fatal("the devices bucket's header was not found in the file")
	}
	b = bytes.ReplaceAll(b, old, binary.LittleEndian.AppendUint64([]byte("devices"), 1<<28))
	must(t, os.WriteFile(path, b, 0o600))

	s, err := filestore.Open(path, key, filestore.WithLogger(discardLogger))
	if err != nil {
		if !errors.Is(err, filestore.ErrCorrupt) {
			t.Fatalf("Open: got %v, want nil or ErrCorrupt", err)
		}
		return
	}
	defer s.Close()
	if _, err := s.GetDevice(t.Context(), "dev-01"); !errors.Is(err, filestore.ErrCorrupt) {
		t.Errorf("GetDevice: got %v, want ErrCorrupt", err)
	}
	err = s.CreateDevice(t.Context(), domain.Device{ID: "dev-new", Hub: "hub-iot"})
	if !errors.Is(err, filestore.ErrCorrupt) {
		t.Errorf("CreateDevice: got %v, want ErrCorrupt", err)
	}
	if rep, err := s.Check(t.Context()); err == nil && len(rep.Problems) == 0 {
		t.Error("Check: got a clean report of a damaged file")
	}
}
