package persist_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := persist.New(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); !errors.Is(err, persist.ErrNone) {
		t.Fatalf("empty: got %v, want ErrNone", err)
	}
	now := time.Now().Truncate(time.Second)
	want := token.Token{Response: oapi.TokenResponse{Token: "SharedAccessSignature sr=a&sig=b&se=1", ServerTime: now, ExpiresAt: now.Add(time.Hour), RefreshAfter: now.Add(48 * time.Minute)}, RequestedAt: now, Key: "k"}
	for range 2 { // the second save replaces the first
		if err := f.Save(want); err != nil {
			t.Fatal(err)
		}
	}
	got, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Response.Token != want.Response.Token || !got.ExpiresAt().Equal(want.ExpiresAt()) || got.Key != want.Key {
		t.Errorf("got %+v, want %+v", got, want)
	}
	fi, err := os.Stat(f.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode: got %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: got %v, want 0700", di.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the token file (no temporary files left)", len(entries))
	}
	if err := os.Chmod(f.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err == nil {
		t.Error("a world-readable token file was loaded, want it refused")
	}
}
