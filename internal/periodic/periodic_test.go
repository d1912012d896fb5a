package periodic_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/periodic"
)

// TestRun: the task runs again and again, with Run's context, until that context ends;
// then Run returns nil without another call.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := 0
	err := periodic.Run(ctx, time.Millisecond, func(got context.Context) {
		if got != ctx {
			t.Error("the task got another context than Run's")
		}
		if calls++; calls == 3 {
			cancel()
		}
	})
	if err != nil || calls != 3 {
		t.Errorf("got %v after %d calls, want nil after 3", err, calls)
	}
	if err := periodic.Run(ctx, time.Hour, func(context.Context) { t.Error("called after ctx ended") }); err != nil {
		t.Errorf("ended ctx: got %v, want nil", err)
	}
}
