package app

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/httpapi"
)

func TestImportWorkersDefault(t *testing.T) {
	for _, tc := range []struct {
		store string
		set   int
		want  int
	}{
		{"embedded", 0, embeddedImportWorkers},
		{"vault", 0, httpapi.DefaultImportWorkers},
		{"embedded", 1, 1},
		{"vault", 200, 200},
	} {
		c := Defaults()
		c.Store, c.ImportWorkers = tc.store, tc.set
		if got := c.importWorkers(); got != tc.want {
			t.Errorf("store %s, -import-workers %d: %d workers, want %d", tc.store, tc.set, got, tc.want)
		}
	}
}
