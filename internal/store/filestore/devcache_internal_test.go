package filestore

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
)

func TestRecCache(t *testing.T) {
	identity := func(s string) string { return s }
	t.Run("least recently used goes first", func(t *testing.T) {
		c := newRecCache(2, identity)
		_, _, gen := c.get("a")
		c.put("a", "A", gen)
		c.put("b", "B", gen)
		if _, ok, _ := c.get("a"); !ok { // a is now the most recently used
			t.Fatal("a missing")
		}
		c.put("c", "C", gen)
		if _, ok, _ := c.get("b"); ok {
			t.Error("b kept: the least recently used entry should have gone")
		}
		for _, k := range []string{"a", "c"} {
			if v, ok, _ := c.get(k); !ok || v != string(k[0]-'a'+'A') {
				t.Errorf("get %s = %q, %v", k, v, ok)
			}
		}
	})
	t.Run("a read that raced a write cannot put back the old record", func(t *testing.T) {
		c := newRecCache(8, identity)
		_, _, gen := c.get("d") // a read misses and goes to the file ...
		c.invalidate("d")       // ... while a write to d commits
		c.put("d", "old", gen)  // the read's result is from before the write
		if v, ok, _ := c.get("d"); ok {
			t.Errorf("stale record %q put back after the write's invalidation", v)
		}
		_, _, gen = c.get("d")
		c.put("d", "new", gen)
		if v, ok, _ := c.get("d"); !ok || v != "new" {
			t.Errorf("get d = %q, %v; want the record read after the write", v, ok)
		}
	})
	t.Run("size 0 keeps nothing", func(t *testing.T) {
		c := newRecCache(0, identity)
		_, _, gen := c.get("a")
		c.put("a", "A", gen)
		if _, ok, _ := c.get("a"); ok {
			t.Error("a cache of size 0 kept a record")
		}
	})
}

// TestCloseDropsDecodedRecords checks that Close leaves no decoded device or hub (keys
// and secrets in clear) in the Store's memory, not even one put by a read that was
// under way when Close ran.
func TestCloseDropsDecodedRecords(t *testing.T) {
	key := make([]byte, KeySize)
	s, err := Open(t.TempDir()+"/tokensvc.db", key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.CreateHub(ctx, domain.Hub{Name: "h", Kind: "iothub", Hostname: "h.azure-devices.net"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDevice(ctx, domain.Device{ID: "d", Hub: "h", PrimaryKey: "cA=="}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetHub(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDevice(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	_, _, gen := s.devices.get("late") // a read that missed before Close ...
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.devices.put("late", d, gen) // ... and puts what it read after
	if n, m := s.devices.lru.Len(), s.hubs.lru.Len(); n != 0 || m != 0 {
		t.Errorf("after Close: %d decoded devices and %d hubs kept in memory, want none", n, m)
	}
}
