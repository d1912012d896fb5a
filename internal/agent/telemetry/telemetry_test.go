package telemetry_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// TestServeSocket serves a real Unix socket: two connections at once each get their
// lines through (JSON parsed, a bad line skipped), the socket has mode 0660, and
// ending the context closes the listener and every open connection and returns nil.
func TestServeSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.sock")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := make(chan telemetry.Message, 4)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- telemetry.ServeSocket(ctx, path, telemetry.JSON, out, log) }()

	var c1 net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if c1, err = net.Dial("unix", path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket never accepted: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c1.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: got %v (%v), want 0660", fi.Mode().Perm(), err)
	}
	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "not json\n"+`{"body":"two","properties":{"k":"v"}}`+"\n")
	io.WriteString(c1, `{"body":{"n":1}}`+"\n")
	got := map[string]string{}
	for range 2 {
		select {
		case m := <-out:
			got[string(m.Body)] = m.Properties["k"]
		case <-time.After(10 * time.Second):
			t.Fatalf("messages: got %v, want two", got)
		}
	}
	if v, ok := got["two"]; !ok || v != "v" || len(got) != 2 {
		t.Errorf("messages: got %v, want {\"n\":1} and two with k=v", got)
	}
	if _, ok := got[`{"n":1}`]; !ok {
		t.Errorf("messages: got %v, want the JSON body {\"n\":1}", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeSocket after the context ended: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeSocket did not return after the context ended")
	}
	if _, err := c1.Read(make([]byte, 1)); err == nil {
		t.Error("a connection was left open after ServeSocket returned")
	}
}

// TestReadLinesSkipsOnlyAnOverlongLine: a line longer than MaxLine from the local
// program is skipped (and logged) on its own; the lines after it are still read — on
// standard input, ending the input would end the device's telemetry until a restart.
// A line cut off by a broken stream is not sent as if whole.
func TestReadLinesSkipsOnlyAnOverlongLine(t *testing.T) {
	in := io.MultiReader(strings.NewReader("before\n"+strings.Repeat("x", telemetry.MaxLine+10)+"\nafter\r\ncut-o"),
		iotest.ErrReader(errors.New("read error")))
	out := make(chan telemetry.Message, 10)
	err := telemetry.ReadLines(t.Context(), in, telemetry.Raw, out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	close(out)
	var got []string
	for m := range out {
		got = append(got, string(m.Body))
	}
	if strings.Join(got, ",") != "before,after" {
		t.Errorf("messages: got %.40q, want before,after", got)
	}
	if err == nil {
		t.Error("ReadLines: got nil, want the read error")
	}
}
