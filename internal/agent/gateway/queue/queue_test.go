package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

func mustOpen(tb testing.TB, path string, limit int, log *slog.Logger) *Queue {
	tb.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	q, err := Open(Options{Path: path, Limit: limit, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	return q
}

func mustPut(tb testing.TB, q *Queue, leaf, body string) {
	tb.Helper()
	if err := q.Put(leaf, telemetry.Message{Body: []byte(body), Properties: map[string]string{"leaf": leaf}}); err != nil {
		tb.Fatal(err)
	}
}

// drain acknowledges every queued message of leaf and returns their bodies in order.
func drain(tb testing.TB, q *Queue, leaf string) []string {
	tb.Helper()
	var out []string
	for q.pending(leaf) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := q.Head(ctx, leaf)
		cancel()
		if err != nil {
			tb.Fatal(err)
		}
		if r.Leaf != leaf || r.Properties["leaf"] != leaf {
			tb.Fatalf("head of %s: got record of %s %v", leaf, r.Leaf, r.Properties)
		}
		out = append(out, string(r.Body))
		q.Ack(leaf, r.Seq)
	}
	return out
}

func (q *Queue) pending(leaf string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.leaf(leaf).seqs)
}

// TestRestartKeepsUnacked: what was put and not acknowledged is there after a reopen,
// per leaf in order; what was acknowledged is not.
func TestRestartKeepsUnacked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := mustOpen(t, path, 100, nil)
	for i := range 5 {
		mustPut(t, q, "a", fmt.Sprint("a", i))
		mustPut(t, q, "b", fmt.Sprint("b", i))
	}
	r, err := q.Head(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	q.Ack("a", r.Seq)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, path, 100, nil)
	defer q.Close()
	if got, want := drain(t, q, "a"), []string{"a1", "a2", "a3", "a4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("leaf a after restart: got %v, want %v", got, want)
	}
	if got, want := drain(t, q, "b"), []string{"b0", "b1", "b2", "b3", "b4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("leaf b after restart: got %v, want %v", got, want)
	}
	mustPut(t, q, "a", "a5") // numbering continues after the kept records
	if got := drain(t, q, "a"); !reflect.DeepEqual(got, []string{"a5"}) {
		t.Errorf("after restart, new message: got %v", got)
	}
}

// TestOverflowDropsOldestCounted: beyond the limit the oldest messages (of any leaf)
// go, each counted, with a log line; acknowledged ones are never counted as dropped.
func TestOverflowDropsOldestCounted(t *testing.T) {
	logs := &syncbuf.Buffer{}
	q := mustOpen(t, filepath.Join(t.TempDir(), "q.db"), 3, slog.New(slog.NewJSONHandler(logs, nil)))
	mustPut(t, q, "a", "1")
	r, _ := q.Head(t.Context(), "a")
	q.Ack("a", r.Seq)
	for _, m := range []struct{ leaf, body string }{{"a", "2"}, {"b", "3"}, {"a", "4"}, {"b", "5"}, {"a", "6"}} {
		mustPut(t, q, m.leaf, m.body)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	s := q.Stats()
	if s.Accepted != 6 || s.Acked != 1 || s.Dropped != 2 || s.Pending != 3 {
		t.Errorf("stats: got %+v, want accepted 6 acked 1 dropped 2 pending 3", s)
	}
	if !strings.Contains(logs.String(), "oldest messages dropped") {
		t.Errorf("no log line for the drops: %s", logs.String())
	}
	q = mustOpen(t, q.o.Path, 3, nil)
	defer q.Close()
	if got := append(drain(t, q, "a"), drain(t, q, "b")...); !reflect.DeepEqual(got, []string{"4", "6", "5"}) {
		t.Errorf("kept: got %v, want [4 6 5] (2 and 3 dropped as the oldest)", got)
	}
}

// TestConcurrentPutsShareCommits: many leaves putting at once all land, each once.
func TestConcurrentPutsShareCommits(t *testing.T) {
	q := mustOpen(t, filepath.Join(t.TempDir(), "q.db"), 10000, nil)
	defer q.Close()
	var wg sync.WaitGroup
	for l := range 20 {
		wg.Go(func() {
			for i := range 20 {
				mustPut(t, q, fmt.Sprint("leaf", l), fmt.Sprint(i))
			}
		})
	}
	wg.Wait()
	for l := range 20 {
		got := drain(t, q, fmt.Sprint("leaf", l))
		if len(got) != 20 || got[0] != "0" || got[19] != "19" {
			t.Fatalf("leaf%d: got %v", l, got)
		}
	}
	q.Close() // commits the last acknowledgements
	if s := q.Stats(); s.Accepted != 400 || s.Acked != 400 || s.Pending != 0 {
		t.Errorf("stats: got %+v", s)
	}
}

func TestHeadWaitsForContext(t *testing.T) {
	q := mustOpen(t, filepath.Join(t.TempDir(), "q.db"), 10, nil)
	defer q.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := q.Head(ctx, "nobody"); err == nil {
		t.Fatal("Head on an empty leaf with an ended context: got nil error")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode("leaf-1", telemetry.Message{Body: []byte("x"), Properties: map[string]string{"k": "v"}}))
	f.Add([]byte{1, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		leaf, m, err := decode(b)
		if err != nil {
			return
		}
		leaf2, m2, err := decode(encode(leaf, m))
		if err != nil || leaf2 != leaf || string(m2.Body) != string(m.Body) || len(m2.Properties) != len(m.Properties) {
			t.Fatalf("round trip: %q %+v -> %q %+v %v", leaf, m, leaf2, m2, err)
		}
	})
}
