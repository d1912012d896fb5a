package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/app"
)

// TestValidateTransitBatch: the Transit batching knobs are bounded (0 to 1024 items,
// a wait from 0 to the Vault call deadline) and the defaults pass.
func TestValidateTransitBatch(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		wait    time.Duration
		wantErr string
	}{
		{name: "defaults", max: 64},
		{name: "disabled", max: 0},
		{name: "one is disabled too", max: 1},
		{name: "largest", max: 1024, wait: 250 * time.Millisecond},
		{name: "negative max", max: -1, wantErr: "transit batch max"},
		{name: "max too large", max: 1025, wantErr: "transit batch max"},
		{name: "negative wait", max: 64, wait: -time.Millisecond, wantErr: "transit batch wait"},
		{name: "wait beyond the deadline", max: 64, wait: 251 * time.Millisecond, wantErr: "transit batch wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := app.Defaults()
			c.Store = "vault"
			c.Vault.Address, c.Vault.Token = "http://127.0.0.1:8200", "test-token-not-used"
			c.VaultStore.TransitBatchMax, c.VaultStore.TransitBatchWait = tt.max, tt.wait
			err := c.Validate()
			if tt.wantErr == "" && err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if got := app.Defaults().VaultStore.TransitBatchMax; got != 64 {
		t.Errorf("default batch max: got %d, want 64", got)
	}
}
