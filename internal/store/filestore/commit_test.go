package filestore_test

import (
	"testing"
)

// TestCommitStats checks the commit cost counters the scale measurement reads: every
// commit writes pages and spends time writing them, a refused write does not commit,
// and a closed store reports zeros.
func TestCommitStats(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	ctx := t.Context()
	must(t, s.CreateHub(ctx, iotHub("hub-a")))
	pages0, _, write0 := s.CommitStats()
	c0, _ := s.BatchStats()
	must(t, s.CreateDevice(ctx, device("dev-1", "hub-a")))
	must(t, s.CreateDevice(ctx, device("dev-2", "hub-a")))
	pages1, spill1, write1 := s.CommitStats()
	c1, _ := s.BatchStats()
	if commits := c1 - c0; pages1-pages0 < 2*commits || commits == 0 {
		t.Errorf("pages written: got %d for %d commits, want at least a data and a meta page each", pages1-pages0, commits)
	}
	if write1 <= write0 || spill1 <= 0 {
		t.Errorf("times: write %v -> %v, spill %v; want both to grow", write0, write1, spill1)
	}
	if err := s.CreateDevice(ctx, device("dev-1", "hub-a")); err == nil {
		t.Fatal("CreateDevice(dev-1) again: no error")
	}
	if c2, _ := s.BatchStats(); c2 != c1 {
		t.Errorf("a refused write counted a commit: %d -> %d", c1, c2)
	}
	// It did not commit at all (no page written, no fsync): it changed nothing.
	if pages2, _, _ := s.CommitStats(); pages2 != pages1 {
		t.Errorf("a refused write wrote %d pages, want none", pages2-pages1)
	}
	mustClose(t, s)
	if p, sp, w := s.CommitStats(); p != 0 || sp != 0 || w != 0 {
		t.Errorf("CommitStats after Close: got %d, %v, %v, want zeros", p, sp, w)
	}
}
