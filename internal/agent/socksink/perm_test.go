package socksink_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tokensvc/tokensvc/internal/agent/socksink"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// dirEvents watches dir with inotify and returns a function that lists, in order, the
// events so far on name: "create", "moved-in" and "attrib" (a chmod).
func dirEvents(t *testing.T, dir, name string) func() []string {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_ATTRIB|syscall.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	var seen []string
	return func() []string {
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil || n <= 0 {
				return seen
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				raw := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
				off += syscall.SizeofInotifyEvent + int(ev.Len)
				if i := indexNUL(raw); string(raw[:i]) != name {
					continue
				}
				switch {
				case ev.Mask&syscall.IN_CREATE != 0:
					seen = append(seen, "create")
				case ev.Mask&syscall.IN_MOVED_TO != 0:
					seen = append(seen, "moved-in")
				case ev.Mask&syscall.IN_ATTRIB != 0:
					seen = append(seen, "attrib")
				}
			}
		}
	}
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// TestSocketHasItsModeFromTheStart: the token socket must never be reachable at its
// path with a wider mode than configured. Bound with the process umask and chmod-ed
// afterwards, it is connectable meanwhile by anyone the umask lets in (umask 000, or
// 002 and the group), and a connection queued in that window is served the token once
// the server starts. The socket must appear at its path with its mode already set: no
// chmod (inotify IN_ATTRIB) after it appeared there.
func TestSocketHasItsModeFromTheStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token.sock")
	events := dirEvents(t, dir, "token.sock")
	s, err := socksink.New(socksink.Config{Path: path}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, &token.Holder{}) }()
	testpeer.WaitFor(t, "the socket", 5*time.Second, func() bool {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	got := events()
	for i, e := range got {
		if e == "attrib" && i > 0 {
			t.Errorf("socket events at its path: %v — its mode changed after it appeared", got)
			break
		}
	}
	if len(got) == 0 {
		t.Error("no inotify event for the socket")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Run: %v", err)
	}
}
