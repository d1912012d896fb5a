package filestore_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustOpen(t, storePath(t), newKey(t))
	})
}

func TestReopenPreservesEverything(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	settings := populate(t, s)
	want := dump(t, s, settings...).encode(t)
	mustClose(t, s)

	steps := []struct {
		name    string
		compact bool
	}{
		{"reopen", false},
		{"reopen again", false},
		{"compact", true},
		{"reopen after compaction", false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			s := mustOpen(t, path, key)
			defer mustClose(t, s)
			if st.compact {
				must(t, s.Compact())
			}
			if got := dump(t, s, settings...).encode(t); got != want {
				t.Errorf("contents:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

func TestOpenWrongKey(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	populate(t, s)
	mustClose(t, s)
	before, err := os.ReadFile(path)
	must(t, err)

	_, err = filestore.Open(path, newKey(t))
	if !errors.Is(err, filestore.ErrWrongKey) {
		t.Fatalf("Open with another key: got error %v, want %v", err, filestore.ErrWrongKey)
	}
	if errors.Is(err, filestore.ErrCorrupt) {
		t.Errorf("Open with another key: got %v, want it not to match ErrCorrupt", err)
	}
	after, err := os.ReadFile(path)
	must(t, err)
	if !bytes.Equal(after, before) {
		t.Error("Open with another key changed the file")
	}
	mustClose(t, mustOpen(t, path, key))
}

func TestOpenRejectsBadKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := storePath(t)
			s, err := filestore.Open(path, make([]byte, n))
			if err == nil {
				s.Close()
				t.Fatalf("Open with %d-byte key: got nil error, want one", n)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open with %d-byte key: got file stat error %v, want no file created", n, err)
			}
		})
	}
}

// logFile is a small store file and where its frames start: the header ends at
// frames[0] and the last frame starts at frames[len-1].
type logFile struct {
	key    []byte
	data   []byte
	frames []int
}

// buildLog writes a hub, devices dev-1..dev-3 and a setting, one frame each.
func buildLog(t *testing.T) logFile {
	t.Helper()
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	frames := []int{int(fileSize(t, path))}
	mark := func(err error) {
		t.Helper()
		must(t, err)
		frames = append(frames, int(fileSize(t, path)))
	}
	mark(s.CreateHub(t.Context(), iotHub("hub-a")))
	for i := 1; i <= 3; i++ {
		mark(s.CreateDevice(t.Context(), device(fmt.Sprintf("dev-%d", i), "hub-a")))
	}
	must(t, s.PutSetting(t.Context(), "last", []byte("frame")))
	mustClose(t, s)
	data, err := os.ReadFile(path)
	must(t, err)
	return logFile{key: key, data: data, frames: frames}
}

func (l logFile) lastStart() int { return l.frames[len(l.frames)-1] }

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	path := storePath(t)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	must(t, os.WriteFile(path, data, 0o600))
	return path
}

func TestTornFinalFrame(t *testing.T) {
	l := buildLog(t)
	last := l.lastStart()
	zero := func(d []byte, from, to int) []byte {
		clear(d[from:to])
		return d
	}
	tests := []struct {
		name     string
		mutate   func(d []byte) []byte
		wantLast bool // whether the final setting survives
	}{
		{"cut 1 byte", func(d []byte) []byte { return d[:len(d)-1] }, false},
		{"cut 5 bytes", func(d []byte) []byte { return d[:len(d)-5] }, false},
		{"cut inside frame header", func(d []byte) []byte { return d[:last+3] }, false},
		{"cut after frame header", func(d []byte) []byte { return d[:last+8] }, false},
		{"cut after nonce", func(d []byte) []byte { return d[:last+20] }, false},
		{"final frame zeroed", func(d []byte) []byte { return zero(d, last, len(d)) }, false},
		{"final frame header zeroed", func(d []byte) []byte { return zero(d, last, last+8) }, false},
		{"final frame tail zeroed", func(d []byte) []byte { return zero(d, len(d)-10, len(d)) }, false},
		{"zeros after final frame", func(d []byte) []byte { return append(d, make([]byte, 100)...) }, true},
		{"garbage after final frame", func(d []byte) []byte { return append(d, "partial write"...) }, true},
		{"bit flip in final frame", func(d []byte) []byte { d[len(d)-3] ^= 1; return d }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, tc.mutate(slices.Clone(l.data)))
			s := mustOpen(t, path, l.key)
			ctx := t.Context()
			for i := 1; i <= 3; i++ {
				if _, err := s.GetDevice(ctx, fmt.Sprintf("dev-%d", i)); err != nil {
					t.Errorf("GetDevice(dev-%d): got error %v, want nil", i, err)
				}
			}
			_, err := s.GetSetting(ctx, "last")
			if gotLast := err == nil; gotLast != tc.wantLast {
				t.Errorf("final setting present: got %v (err %v), want %v", gotLast, err, tc.wantLast)
			}
			wantSize := int64(last)
			if tc.wantLast {
				wantSize = int64(len(l.data))
			}
			if got := fileSize(t, path); got != wantSize {
				t.Errorf("file size after recovery: got %d, want %d", got, wantSize)
			}

			must(t, s.CreateDevice(ctx, device("dev-4", "hub-a")))
			mustClose(t, s)
			s = mustOpen(t, path, l.key)
			for _, id := range []string{"dev-1", "dev-2", "dev-3", "dev-4"} {
				if _, err := s.GetDevice(ctx, id); err != nil {
					t.Errorf("GetDevice(%q) after reopen: got error %v, want nil", id, err)
				}
			}
		})
	}
}

// TestDamageBeforeFinalFrame flips every bit position's byte, one at a time, anywhere
// before the final frame: each must be reported, never repaired by dropping data.
func TestDamageBeforeFinalFrame(t *testing.T) {
	l := buildLog(t)
	path := writeTemp(t, l.data)
	for off := range l.lastStart() {
		for _, bit := range []byte{0x01, 0x80} {
			d := slices.Clone(l.data)
			d[off] ^= bit
			must(t, os.WriteFile(path, d, 0o600))
			s, err := filestore.Open(path, l.key, filestore.WithLogger(discardLogger))
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, filestore.ErrCorrupt) {
				t.Fatalf("byte %d ^ %#x: got error %v, want %v", off, bit, err, filestore.ErrCorrupt)
			}
			after, rerr := os.ReadFile(path)
			must(t, rerr)
			if !bytes.Equal(after, d) {
				t.Fatalf("byte %d ^ %#x: failed Open changed the file", off, bit)
			}
		}
	}
}

func TestOpenDetectsStructuralDamage(t *testing.T) {
	l := buildLog(t)
	f := l.frames // f[0] = end of header; frame i spans f[i]..f[i+1]
	frame := func(i int) []byte { return l.data[f[i]:f[i+1]] }
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"first frame removed", join(l.data[:f[0]], l.data[f[1]:]), filestore.ErrCorrupt},
		{"middle frame removed", join(l.data[:f[1]], l.data[f[2]:]), filestore.ErrCorrupt},
		{"frame repeated", join(l.data[:f[2]], frame(1), l.data[f[2]:]), filestore.ErrCorrupt},
		{"frames swapped", join(l.data[:f[1]], frame(2), frame(1), l.data[f[3]:]), filestore.ErrCorrupt},
		{"bytes lost mid-frame", join(l.data[:f[1]+30], l.data[f[1]+40:]), filestore.ErrCorrupt},
		{"bytes inserted mid-frame", join(l.data[:f[1]+30], []byte("xyz"), l.data[f[1]+30:]), filestore.ErrCorrupt},
		{"middle frame zeroed", join(l.data[:f[1]], make([]byte, f[2]-f[1]), l.data[f[2]:]), filestore.ErrCorrupt},
		{"header zeroed", join(make([]byte, f[0]), l.data[f[0]:]), filestore.ErrCorrupt},
		{"shorter than header", l.data[:f[0]-1], filestore.ErrCorrupt},
		{"not a store file", []byte("this is some other file entirely, and rather long for a header\n"), filestore.ErrCorrupt},
		{"header only", l.data[:f[0]], nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, tc.data)
			s, err := filestore.Open(path, l.key, filestore.WithLogger(testLogger(t)))
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Open: got error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestCompact(t *testing.T) {
	path, key := storePath(t), newKey(t)
	// A huge threshold keeps automatic compaction out of the way.
	s := mustOpen(t, path, key, filestore.WithCompactMinSize(1<<40))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	for i := range 40 {
		must(t, s.CreateDevice(ctx, device(fmt.Sprintf("dev-%02d", i), "hub-a")))
	}
	for range 5 {
		for i := range 40 {
			_, err := s.UpdateDevice(ctx, fmt.Sprintf("dev-%02d", i), func(d *domain.Device) error {
				d.Disabled = !d.Disabled
				return nil
			})
			must(t, err)
		}
	}
	for i := 0; i < 40; i += 2 {
		must(t, s.DeleteDevice(ctx, fmt.Sprintf("dev-%02d", i)))
	}
	want := dump(t, s).encode(t)
	before := fileSize(t, path)

	must(t, s.Compact())
	after := fileSize(t, path)
	if after*4 > before {
		t.Errorf("file size after compaction: got %d bytes, want under a quarter of %d", after, before)
	}
	if got := dump(t, s).encode(t); got != want {
		t.Errorf("contents after compaction:\ngot  %s\nwant %s", got, want)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file after compaction: got stat error %v, want not exist", err)
	}

	// The compacted file takes appends and survives a reopen.
	must(t, s.CreateDevice(ctx, device("dev-new", "hub-a")))
	want = dump(t, s).encode(t)
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if got := dump(t, s).encode(t); got != want {
		t.Errorf("contents after reopen:\ngot  %s\nwant %s", got, want)
	}
}

func TestAutomaticCompactionBoundsFile(t *testing.T) {
	const threshold = 16 << 10
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key, filestore.WithCompactMinSize(threshold))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	must(t, s.CreateDevice(ctx, device("dev-1", "hub-a")))
	var maxSize int64
	for i := range 300 {
		_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error {
			d.PrimaryKey = fmt.Sprintf("key-%04d", i)
			return nil
		})
		must(t, err)
		maxSize = max(maxSize, fileSize(t, path))
	}
	if maxSize > 2*threshold {
		t.Errorf("largest file size over 300 updates: got %d bytes, want at most %d", maxSize, 2*threshold)
	}
	mustClose(t, s)
	s = mustOpen(t, path, key)
	d, err := s.GetDevice(ctx, "dev-1")
	must(t, err)
	if got, want := d.PrimaryKey, "key-0299"; got != want {
		t.Errorf("PrimaryKey after reopen: got %q, want %q", got, want)
	}
}

func TestStaleTempFileIgnored(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	settings := populate(t, s)
	want := dump(t, s, settings...).encode(t)
	mustClose(t, s)
	// What a compaction that crashed before its rename leaves behind.
	must(t, os.WriteFile(path+".tmp", []byte("half a snapshot"), 0o600))

	s = mustOpen(t, path, key)
	if got := dump(t, s, settings...).encode(t); got != want {
		t.Errorf("contents:\ngot  %s\nwant %s", got, want)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file: got stat error %v, want not exist", err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))

	tryOpen := func(stage string) {
		t.Helper()
		s2, err := filestore.Open(path, key)
		if err == nil {
			s2.Close()
		}
		if !errors.Is(err, filestore.ErrLocked) {
			t.Errorf("second Open %s: got error %v, want %v", stage, err, filestore.ErrLocked)
		}
	}
	tryOpen("while the first is open")
	// Compaction replaces the file, so the lock must move to the new one.
	must(t, s.Compact())
	tryOpen("after compaction")

	mustClose(t, s)
	s = mustOpen(t, path, key)
	if _, err := s.GetHub(t.Context(), "hub-a"); err != nil {
		t.Errorf("GetHub after reopen: got error %v, want nil", err)
	}
}

func TestFileHoldsNoPlaintext(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	h := policyHub("hub-a")
	h.PolicyKey = "PolicyKey-Q7xNw2rLm9Zt"
	must(t, s.CreateHub(ctx, h))
	d := device("device-id-Zq8vK3pT", "hub-a")
	d.PrimaryKey = "PrimaryKey-hG5sJ1wX"
	d.SecondaryKey = "SecondaryKey-bN4cV8yR"
	d.Modules = []domain.Module{{ID: "module-id-Lp0oKi9u", PrimaryKey: "ModulePrimary-aS2dF4gH", SecondaryKey: "ModuleSecondary-jK6lZ8xC"}}
	d.Auth.Secret = []byte("BootstrapSecret-vB1nM3qW")
	must(t, s.CreateDevice(ctx, d))
	must(t, s.PutSetting(ctx, "admin-token-hash", []byte("SettingValue-eR5tY7uI")))

	needles := []string{
		h.PolicyKey, d.ID, d.PrimaryKey, d.SecondaryKey,
		d.Modules[0].ID, d.Modules[0].PrimaryKey, d.Modules[0].SecondaryKey,
		string(d.Auth.Secret), base64.StdEncoding.EncodeToString(d.Auth.Secret),
		"SettingValue-eR5tY7uI", "admin-token-hash",
	}
	check := func(stage string) {
		t.Helper()
		raw, err := os.ReadFile(path)
		must(t, err)
		for _, n := range needles {
			if bytes.Contains(raw, []byte(n)) {
				t.Errorf("file %s: contains %q in plaintext, want it encrypted", stage, n)
			}
		}
	}
	mustClose(t, s)
	check("as written")

	s = mustOpen(t, path, key)
	must(t, s.Compact())
	mustClose(t, s)
	check("after compaction")
}

func TestReturnedRecordsAreCopies(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	in := device("dev-1", "hub-a")
	must(t, s.CreateDevice(ctx, in))
	want := dump(t, s, "setting").encode(t)

	scribble := func(d *domain.Device) {
		d.Modules[0].PrimaryKey = "scribbled"
		d.Auth.Secret[0] ^= 0xff
	}
	scribble(&in)
	got, err := s.GetDevice(ctx, "dev-1")
	must(t, err)
	scribble(&got)
	page, err := s.ListDevices(ctx, "", 10)
	must(t, err)
	scribble(&page.Devices[0])
	var kept *domain.Device
	updated, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error {
		kept = d
		return nil
	})
	must(t, err)
	scribble(&updated)
	scribble(kept)
	if got := dump(t, s, "setting").encode(t); got != want {
		t.Errorf("after editing returned devices:\ngot  %s\nwant %s", got, want)
	}

	value := []byte("value")
	must(t, s.PutSetting(ctx, "setting", value))
	value[0] = 'X'
	v, err := s.GetSetting(ctx, "setting")
	must(t, err)
	v[1] = 'X'
	if v, _ := s.GetSetting(ctx, "setting"); string(v) != "value" {
		t.Errorf("setting after editing passed and returned slices: got %q, want %q", v, "value")
	}
}

func TestCanceledContext(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))
	must(t, s.CreateDevice(t.Context(), device("dev-1", "hub-a")))
	want := dump(t, s, "setting").encode(t)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"CreateHub", func() error { return s.CreateHub(ctx, iotHub("hub-b")) }},
		{"GetHub", func() error { _, err := s.GetHub(ctx, "hub-a"); return err }},
		{"ListHubs", func() error { _, err := s.ListHubs(ctx); return err }},
		{"DeleteHub", func() error { return s.DeleteHub(ctx, "hub-a") }},
		{"CreateDevice", func() error { return s.CreateDevice(ctx, device("dev-2", "hub-a")) }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "dev-1"); return err }},
		{"ListDevices", func() error { _, err := s.ListDevices(ctx, "", 10); return err }},
		{"UpdateDevice", func() error {
			_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { d.Disabled = true; return nil })
			return err
		}},
		{"DeleteDevice", func() error { return s.DeleteDevice(ctx, "dev-1") }},
		{"GetSetting", func() error { _, err := s.GetSetting(ctx, "setting"); return err }},
		{"PutSetting", func() error { return s.PutSetting(ctx, "setting", []byte("v")) }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with canceled context: got error %v, want %v", tc.name, err, context.Canceled)
			}
		})
	}
	if got := dump(t, s, "setting").encode(t); got != want {
		t.Errorf("contents after canceled calls:\ngot  %s\nwant %s", got, want)
	}
}

func TestClosedStore(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	must(t, s.CreateHub(t.Context(), iotHub("hub-a")))
	mustClose(t, s)
	ctx := t.Context()
	calls := []struct {
		name string
		call func() error
	}{
		{"CreateHub", func() error { return s.CreateHub(ctx, iotHub("hub-b")) }},
		{"GetHub", func() error { _, err := s.GetHub(ctx, "hub-a"); return err }},
		{"ListHubs", func() error { _, err := s.ListHubs(ctx); return err }},
		{"DeleteHub", func() error { return s.DeleteHub(ctx, "hub-a") }},
		{"CreateDevice", func() error { return s.CreateDevice(ctx, device("dev-1", "hub-a")) }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "dev-1"); return err }},
		{"ListDevices", func() error { _, err := s.ListDevices(ctx, "", 10); return err }},
		{"UpdateDevice", func() error {
			_, err := s.UpdateDevice(ctx, "dev-1", func(*domain.Device) error { return nil })
			return err
		}},
		{"DeleteDevice", func() error { return s.DeleteDevice(ctx, "dev-1") }},
		{"GetSetting", func() error { _, err := s.GetSetting(ctx, "s"); return err }},
		{"PutSetting", func() error { return s.PutSetting(ctx, "s", nil) }},
		{"Compact", s.Compact},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, filestore.ErrClosed) {
				t.Errorf("%s after Close: got error %v, want %v", tc.name, err, filestore.ErrClosed)
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got error %v, want nil", err)
	}
}

var errInjected = errors.New("injected I/O error")

func TestFailedWriteChangesNothing(t *testing.T) {
	tests := []struct {
		name  string
		stage string
	}{
		{"write fails", "write"},
		{"fsync fails after a complete write", "sync"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, key := storePath(t), newKey(t)
			s := mustOpen(t, path, key)
			ctx := t.Context()
			must(t, s.CreateHub(ctx, iotHub("hub-a")))
			must(t, s.CreateDevice(ctx, device("dev-1", "hub-a")))
			want := dump(t, s).encode(t)
			size := fileSize(t, path)

			filestore.InjectFault(s, func(stage string) error {
				if stage == tc.stage {
					return errInjected
				}
				return nil
			})
			writes := []struct {
				name string
				call func() error
			}{
				{"CreateDevice", func() error { return s.CreateDevice(ctx, device("dev-2", "hub-a")) }},
				{"UpdateDevice", func() error {
					_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { d.Disabled = true; return nil })
					return err
				}},
				{"DeleteDevice", func() error { return s.DeleteDevice(ctx, "dev-1") }},
				{"CreateHub", func() error { return s.CreateHub(ctx, iotHub("hub-b")) }},
			}
			for _, w := range writes {
				if err := w.call(); !errors.Is(err, errInjected) {
					t.Errorf("%s: got error %v, want %v", w.name, err, errInjected)
				}
			}
			if got := dump(t, s).encode(t); got != want {
				t.Errorf("contents after failed writes:\ngot  %s\nwant %s", got, want)
			}
			if got := fileSize(t, path); got != size {
				t.Errorf("file size after failed writes: got %d, want %d (rolled back)", got, size)
			}

			filestore.InjectFault(s, nil)
			must(t, s.CreateDevice(ctx, device("dev-2", "hub-a")))
			want = dump(t, s).encode(t)
			mustClose(t, s)
			s = mustOpen(t, path, key)
			if got := dump(t, s).encode(t); got != want {
				t.Errorf("contents after reopen:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

func TestFailedRollbackRefusesWritesUntilCompact(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	mustFailRollback(t, s)
	filestore.InjectFault(s, nil)
	if err := s.PutSetting(ctx, "s", []byte("v")); err == nil {
		t.Errorf("PutSetting while the file holds an unacknowledged frame: got nil error, want one")
	}
	if _, err := s.GetHub(ctx, "hub-a"); err != nil {
		t.Errorf("GetHub while writes are refused: got error %v, want nil", err)
	}

	must(t, s.Compact())
	must(t, s.CreateDevice(ctx, device("dev-after", "hub-a")))
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if _, err := s.GetDevice(ctx, "dev-lost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice(dev-lost), whose create failed: got error %v, want %v", err, store.ErrNotFound)
	}
	if _, err := s.GetDevice(ctx, "dev-after"); err != nil {
		t.Errorf("GetDevice(dev-after): got error %v, want nil", err)
	}
}

func TestCloseRepairsFailedRollback(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	mustFailRollback(t, s)
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if _, err := s.GetDevice(ctx, "dev-lost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice(dev-lost), whose create failed: got error %v, want %v", err, store.ErrNotFound)
	}
}

func TestUpdateDeviceHubAndID(t *testing.T) {
	path, key := storePath(t), newKey(t)
	s := mustOpen(t, path, key)
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	must(t, s.CreateHub(ctx, iotHub("hub-b")))
	must(t, s.CreateDevice(ctx, device("dev-1", "hub-a")))

	tests := []struct {
		name    string
		fn      func(*domain.Device)
		wantOK  bool
		wantErr error // when !wantOK, nil accepts any error
		wantHub string
	}{
		{name: "move to missing hub", fn: func(d *domain.Device) { d.Hub = "hub-none" }, wantErr: store.ErrNotFound, wantHub: "hub-a"},
		{name: "change ID", fn: func(d *domain.Device) { d.ID = "dev-2" }, wantHub: "hub-a"},
		{name: "move to other hub", fn: func(d *domain.Device) { d.Hub = "hub-b" }, wantOK: true, wantHub: "hub-b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.UpdateDevice(ctx, "dev-1", func(d *domain.Device) error { tc.fn(d); return nil })
			switch {
			case tc.wantOK && err != nil:
				t.Fatalf("UpdateDevice: got error %v, want nil", err)
			case !tc.wantOK && err == nil:
				t.Fatalf("UpdateDevice: got nil error, want one")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("UpdateDevice: got error %v, want %v", err, tc.wantErr)
			}
			d, err := s.GetDevice(ctx, "dev-1")
			must(t, err)
			if d.Hub != tc.wantHub {
				t.Errorf("Hub: got %q, want %q", d.Hub, tc.wantHub)
			}
		})
	}
	if _, err := s.GetDevice(ctx, "dev-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice(dev-2): got error %v, want %v", err, store.ErrNotFound)
	}

	// The per-hub device count must follow the move, in memory and after replay.
	mustClose(t, s)
	s = mustOpen(t, path, key)
	if err := s.DeleteHub(ctx, "hub-b"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("DeleteHub(hub-b) holding the moved device: got error %v, want %v", err, store.ErrConflict)
	}
	if err := s.DeleteHub(ctx, "hub-a"); err != nil {
		t.Errorf("DeleteHub(hub-a) after its device moved: got error %v, want nil", err)
	}
}

func TestListDevicesCursor(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	for i := range 10 {
		must(t, s.CreateDevice(ctx, device(fmt.Sprintf("dev-%d", i), "hub-a")))
	}
	page, err := s.ListDevices(ctx, "", 3)
	must(t, err)
	if page.Next != "dev-2" {
		t.Fatalf("Next: got %q, want %q", page.Next, "dev-2")
	}
	// The cursor stays valid when its device is deleted between pages.
	must(t, s.DeleteDevice(ctx, "dev-2"))
	page, err = s.ListDevices(ctx, page.Next, 3)
	must(t, err)
	ids := make([]string, len(page.Devices))
	for i, d := range page.Devices {
		ids[i] = d.ID
	}
	if want := []string{"dev-3", "dev-4", "dev-5"}; !slices.Equal(ids, want) {
		t.Errorf("page after deleted cursor: got %q, want %q", ids, want)
	}
}

func TestListDevicesDefaultLimit(t *testing.T) {
	path, key := storePath(t), newKey(t)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	var devices []domain.Device
	for i := range filestore.DefaultPageSize + 5 {
		devices = append(devices, device(fmt.Sprintf("dev-%04d", i), "hub-a"))
	}
	must(t, filestore.WriteSnapshotForTest(path, key, []domain.Hub{iotHub("hub-a")}, devices))
	s := mustOpen(t, path, key)
	for _, limit := range []int{0, -1} {
		page, err := s.ListDevices(t.Context(), "", limit)
		must(t, err)
		if got := len(page.Devices); got != filestore.DefaultPageSize {
			t.Errorf("ListDevices limit %d: got %d devices, want %d", limit, got, filestore.DefaultPageSize)
		}
	}
}

func TestEmptyNamesRejected(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	want := dump(t, s, "").encode(t)
	calls := []struct {
		name string
		call func() error
	}{
		{"CreateHub", func() error { return s.CreateHub(ctx, domain.Hub{}) }},
		{"CreateDevice", func() error { return s.CreateDevice(ctx, device("", "hub-a")) }},
		{"PutSetting", func() error { return s.PutSetting(ctx, "", []byte("v")) }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Errorf("%s with empty name: got nil error, want one", tc.name)
			}
		})
	}
	if got := dump(t, s, "").encode(t); got != want {
		t.Errorf("contents:\ngot  %s\nwant %s", got, want)
	}
}

// TestConcurrentUse runs readers against writers and compactions, for the race detector
// and to show readers never see a device half-written.
func TestConcurrentUse(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t), filestore.WithCompactMinSize(8<<10))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	for i := range 10 {
		must(t, s.CreateDevice(ctx, device(fmt.Sprintf("dev-%d", i), "hub-a")))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprintf("dev-%d", (w+i)%10)
				_, err := s.UpdateDevice(ctx, id, func(d *domain.Device) error {
					// Primary and secondary always change together; a reader seeing
					// them differ saw a torn record.
					n := fmt.Sprintf("%d-%d", w, i)
					d.PrimaryKey, d.SecondaryKey = "p"+n, "s"+n
					return nil
				})
				if err != nil {
					errs <- err
				}
				if i%20 == 0 {
					if err := s.Compact(); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 200 {
				page, err := s.ListDevices(ctx, "", 4)
				if err != nil {
					errs <- err
					return
				}
				for _, d := range page.Devices {
					if d.PrimaryKey[0] == 'p' && d.PrimaryKey[1:] != d.SecondaryKey[1:] {
						errs <- fmt.Errorf("device %q: got keys %q and %q, want them from one update", d.ID, d.PrimaryKey, d.SecondaryKey)
					}
				}
				if _, err := s.GetDevice(ctx, "dev-3"); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// mustFailRollback leaves s with hub-a and a create of dev-lost whose write and whose
// rollback both failed (the file may hold a frame nobody acknowledged); the fault stays
// injected.
func mustFailRollback(t *testing.T, s *filestore.Store) {
	t.Helper()
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	filestore.InjectFault(s, func(stage string) error {
		if stage == "sync" || stage == "truncate" {
			return errInjected
		}
		return nil
	})
	if err := s.CreateDevice(ctx, device("dev-lost", "hub-a")); !errors.Is(err, errInjected) {
		t.Fatalf("CreateDevice: got error %v, want %v", err, errInjected)
	}
}
