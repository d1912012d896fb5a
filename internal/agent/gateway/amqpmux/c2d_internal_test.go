package amqpmux

import (
	"slices"
	"testing"
	"time"
)

// TestC2DPool: two slots, four eligible leaves: the first two hold, the others wait in
// order; nothing rotates before dwell; after it the oldest grants go to the waiting
// leaves, which go to the back of the line; a leaf leaving hands its slot to the
// longest-waiting one; a waiting leaf leaving just leaves the line; with nobody waiting
// nothing rotates however long a slot is held.
func TestC2DPool(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newC2DPool(2, 10*time.Second, func() time.Time { return now })
	for i, id := range []string{"a", "b", "c", "d"} {
		if got, want := p.add(id), i < 2; got != want {
			t.Fatalf("add %s: holds %v, want %v", id, got, want)
		}
	}
	if !p.add("a") || p.add("c") {
		t.Fatal("adding again changed nothing: a holds, c waits")
	}
	now = now.Add(9 * time.Second)
	if r, g := p.rotate(); r != nil || g != nil {
		t.Fatalf("rotation before dwell: revoked %v granted %v", r, g)
	}
	now = now.Add(time.Second)
	r, g := p.rotate()
	if !slices.Equal(r, []string{"a", "b"}) || !slices.Equal(g, []string{"c", "d"}) {
		t.Fatalf("rotation after dwell: revoked %v granted %v, want [a b] and [c d]", r, g)
	}
	if !p.holds("c") || !p.holds("d") || p.holds("a") || p.holds("b") {
		t.Fatal("after rotation c and d hold, a and b wait")
	}
	if got := p.remove("c"); got != "a" {
		t.Fatalf("c leaving: slot to %q, want a (longest waiting)", got)
	}
	if got := p.remove("b"); got != "" || p.holds("b") {
		t.Fatalf("waiting b leaving: slot to %q, want none", got)
	}
	held, waiting, revokes := p.counts()
	if held != 2 || waiting != 0 || revokes != 2 {
		t.Fatalf("counts: %d held, %d waiting, %d revokes; want 2, 0, 2", held, waiting, revokes)
	}
	now = now.Add(time.Hour)
	if r, g := p.rotate(); r != nil || g != nil {
		t.Fatalf("rotation with nobody waiting: revoked %v granted %v", r, g)
	}
}
