package filestore

import "testing"

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
