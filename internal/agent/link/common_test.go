package link_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/link"
)

func TestCommonWithDefaults(t *testing.T) {
	own := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name        string
		in          link.Common
		wantTimeout time.Duration
		wantLogger  *slog.Logger
	}{
		{"zero values take the defaults", link.Common{}, link.DefaultTimeout, slog.Default()},
		{"set values stay", link.Common{Timeout: 5 * time.Second, Logger: own}, 5 * time.Second, own},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.WithDefaults()
			if got.Timeout != tc.wantTimeout || got.Logger != tc.wantLogger {
				t.Errorf("WithDefaults: timeout %v, logger %p; want %v, %p", got.Timeout, got.Logger, tc.wantTimeout, tc.wantLogger)
			}
		})
	}
}
