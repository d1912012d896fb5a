package app_test

import (
	"context"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/store"
)

// TestShippedStoreChecksItself: the store the service is built with (instrumented,
// and on Vault cached) still offers the backend's consistency check.
func TestShippedStoreChecksItself(t *testing.T) {
	a, err := app.New(t.Context(), testConfig(t.TempDir()), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c, ok := a.Store().(interface {
		Check(ctx context.Context) (store.Report, error)
	})
	if !ok {
		t.Fatalf("got a store (%T) without Check", a.Store())
	}
	rep, err := c.Check(t.Context())
	if err != nil {
		t.Fatalf("check: got %v, want nil", err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("fresh store: got %v, want a clean report", err)
	}
}
