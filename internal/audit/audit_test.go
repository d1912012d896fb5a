package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/audit"
)

func TestLoggerWritesJSONLines(t *testing.T) {
	var buf bytes.Buffer
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := audit.New(&buf, func() time.Time { return at }, nil)
	exp := at.Add(time.Hour)
	l.Log(audit.Record{Event: "token.issue", Actor: "d1", Device: "d1", Hub: "h1", ExpiresAt: &exp, Outcome: "success", RequestID: "r1"})
	l.Log(audit.Record{Event: "hub.delete", Actor: "admin", Hub: "h1", Outcome: "success", Status: 204})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2", len(lines))
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"time": "2026-01-02T03:04:05Z", "event": "token.issue", "actor": "d1", "device": "d1", "hub": "h1", "expiresAt": "2026-01-02T04:04:05Z", "outcome": "success", "requestId": "r1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %s: got %v, want %v", k, got[k], v)
		}
	}
	var nilLogger *audit.Logger
	nilLogger.Log(audit.Record{}) // must not panic
}

func TestParseSink(t *testing.T) {
	tests := []struct {
		in      string
		want    audit.Sink
		wantErr bool
	}{
		{in: "stdout", want: audit.Sink{Kind: "stdout"}},
		{in: "off", want: audit.Sink{Kind: "off"}},
		{in: "file:/var/log/a.log", want: audit.Sink{Kind: "file", Path: "/var/log/a.log"}},
		{in: "file:", wantErr: true},
		{in: "syslog", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := audit.ParseSink(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	rf, err := audit.OpenRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := func(i int) []byte { return fmt.Appendf(nil, "%039d\n", i) } // 40 bytes
	for i := range 7 {
		if _, err := rf.Write(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rf.Close(); err != nil {
		t.Fatal(err)
	}
	// 2 lines per file: 0,1 | 2,3 | 4,5 | 6 — the oldest is gone with keep=2.
	want := map[string]string{
		"audit.log":   string(line(6)),
		"audit.log.1": string(line(4)) + string(line(5)),
		"audit.log.2": string(line(2)) + string(line(3)),
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		t.Errorf("got %d files, want %d", len(entries), len(want))
	}
	checkFiles(t, dir, want)
	for name := range want {
		fi, _ := os.Stat(filepath.Join(dir, name))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
}

// FuzzParseSink: any input either parses to a known kind or is an error.
func FuzzParseSink(f *testing.F) {
	for _, s := range []string{"stdout", "off", "file:/a", "file:", "", "FILE:/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := audit.ParseSink(s)
		if err != nil {
			return
		}
		switch got.Kind {
		case "stdout", "off":
		case "file":
			if got.Path == "" {
				t.Fatalf("%q: file sink without a path", s)
			}
		default:
			t.Fatalf("%q: kind %q", s, got.Kind)
		}
	})
}

// TestRotatingFileRotationFails blocks rotation (audit.log.1 is a directory that is not
// empty): the records must still be written, to the current file, the failure
// reported, and rotation must work again once the obstacle is gone.
func TestRotatingFileRotationFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	blocker := path + ".1"
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	rf, err := audit.OpenRotating(path, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	var rotateErrs int
	rf.OnRotateError(func(error) { rotateErrs++ })
	line := func(i int) []byte { return fmt.Appendf(nil, "%039d\n", i) } // 40 bytes
	for i := range 4 {                                                   // rotation due at line 2
		if _, err := rf.Write(line(i)); err != nil {
			t.Fatalf("line %d with rotation blocked: %v", i, err)
		}
	}
	if rotateErrs == 0 {
		t.Error("rotation failed unreported")
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	if _, err := rf.Write(line(4)); err != nil {
		t.Fatalf("line 4 after the obstacle went: %v", err)
	}
	want := map[string]string{
		"audit.log.1": string(line(0)) + string(line(1)) + string(line(2)) + string(line(3)),
		"audit.log":   string(line(4)),
	}
	checkFiles(t, dir, want)
}

// checkFiles fails unless each file named in want holds exactly its content in dir.
func checkFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	for name, content := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != content {
			t.Errorf("%s: got %q, want %q", name, b, content)
		}
	}
}
