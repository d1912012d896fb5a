package app_test

import (
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
)

// TestValidateGCHeapFloor: the heap floor is 0 (off) to 64 GiB, 64 MiB by default.
func TestValidateGCHeapFloor(t *testing.T) {
	for _, tt := range []struct {
		mib     int
		wantErr bool
	}{{0, false}, {64, false}, {64 << 10, false}, {-1, true}, {64<<10 + 1, true}} {
		c := app.Defaults()
		c.GCHeapFloorMiB = tt.mib
		if err := c.Validate(); (err != nil) != tt.wantErr || (err != nil && !strings.Contains(err.Error(), "gc heap floor")) {
			t.Errorf("floor %d MiB: got %v, want error %v", tt.mib, err, tt.wantErr)
		}
	}
	if got := app.Defaults().GCHeapFloorMiB; got != 64 {
		t.Errorf("default floor: got %d MiB, want 64", got)
	}
}
