package intake_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// TestOverlongLineSkipsOnlyItself: one stream (a serial bridge's TCP connection) carries
// many leaves' lines. A line longer than the intake takes is refused on its own —
// counted as malformed and logged — and the lines after it on the same stream are
// still read, as a malformed line's are; it does not end the stream and lose them.
func TestOverlongLineSkipsOnlyItself(t *testing.T) {
	q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	l := intake.NewLines(intake.LineOptions{Leaves: intake.Leaves{"lora-1": "", "lora-2": ""}, Sink: q})
	in := "lora-1 before\n" +
		"lora-1 " + strings.Repeat("x", intake.MaxMessage+1024) + "\r\n" +
		"lora-2 after\n" +
		"lora-9 unknown\n" +
		"lora-2 " + strings.Repeat("y", 100) + "\n" +
		"lora-1 " + strings.Repeat("z", 3*intake.MaxMessage) + "\n" +
		"lora-1 last, without a newline"
	if err := l.ServeReader(strings.NewReader(in)); err != nil {
		t.Errorf("ServeReader: %v", err)
	}
	want := map[string][]string{
		"lora-1": {"before", "last, without a newline"},
		"lora-2": {"after", strings.Repeat("y", 100)},
	}
	for leaf, bodies := range want {
		for _, body := range bodies {
			r, ok, err := q.Peek(leaf)
			if err != nil || !ok || !bytes.Equal(r.Body, []byte(body)) {
				t.Fatalf("%s: got %q (%v, %v), want %.20q", leaf, r.Body, ok, err, body)
			}
			q.Ack(leaf, r.Seq)
		}
	}
	if s := l.Stats(); s.Accepted != 4 || s.Malformed != 2 || s.Unknown != 1 {
		t.Errorf("stats: got %+v, want 4 accepted, 2 malformed (the long lines), 1 unknown", s)
	}
}

// TestLongestLineAccepted: a line whose payload is MaxMessage bytes is still taken.
func TestLongestLineAccepted(t *testing.T) {
	q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	l := intake.NewLines(intake.LineOptions{Leaves: intake.Leaves{"lora-1": ""}, Sink: q, Format: telemetry.Raw})
	body := strings.Repeat("b", intake.MaxMessage)
	if err := l.ServeReader(strings.NewReader("lora-1 " + body + "\r\n")); err != nil {
		t.Fatal(err)
	}
	if r, ok, err := q.Peek("lora-1"); err != nil || !ok || len(r.Body) != len(body) {
		t.Fatalf("got %d bytes (%v, %v), want %d", len(r.Body), ok, err, len(body))
	}
}

type brokenStream struct{}

func (brokenStream) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestLineCutByABrokenStreamIsNotTaken: a stream that breaks in the middle of a line
// (connection reset, serial error) leaves a truncated line; it is not taken as if it
// were whole. A stream that ends cleanly (EOF) still has its last line taken.
func TestLineCutByABrokenStreamIsNotTaken(t *testing.T) {
	q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	l := intake.NewLines(intake.LineOptions{Leaves: intake.Leaves{"lora-1": ""}, Sink: q})
	r := io.MultiReader(strings.NewReader("lora-1 whole\nlora-1 {\"t\":21.5,\"valve\":\"clo"), brokenStream{})
	if err := l.ServeReader(r); err == nil {
		t.Error("ServeReader: got nil, want the stream's error")
	}
	if s := l.Stats(); s.Accepted != 1 {
		t.Errorf("accepted: got %d, want only the whole line", s.Accepted)
	}
}

// TestRefusedLineLogsABoundedID: the "leaf ID" of a refused line is whatever the sender
// put before the first space — up to the whole line. The log shows at most a valid ID's
// length of it (128 bytes), not 200 KiB of someone's data.
func TestRefusedLineLogsABoundedID(t *testing.T) {
	var log bytes.Buffer
	l := intake.NewLines(intake.LineOptions{Leaves: intake.Leaves{"lora-1": ""}, Sink: nil,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err := l.Handle([]byte(strings.Repeat("A", 200<<10) + " payload")); !errors.Is(err, intake.ErrUnknownLeaf) {
		t.Fatalf("Handle: got %v, want ErrUnknownLeaf", err)
	}
	if log.Len() > 1024 {
		t.Errorf("log line for one refused line: %d bytes, want at most 1 KiB", log.Len())
	}
	if !strings.Contains(log.String(), strings.Repeat("A", 128)) {
		t.Errorf("log line does not show the ID's beginning: %.200s", log.String())
	}
}
