package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

func TestClassifyShowsOnlyWordsWrittenForClients(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantDetail string
	}{
		{"public invalid", domain.Invalid("deviceId must be %s", "short"), http.StatusBadRequest, "deviceId must be short"},
		{"described record", store.Describe(`device "d1"`, fmt.Errorf("kv read secret/data/x: %w", store.ErrNotFound)), http.StatusNotFound, `device "d1": not found`},
		{"public error wrapped with context", fmt.Errorf("import line 3: %w", domain.Public(store.ErrExists, "device %q exists", "d2")), http.StatusConflict, `device "d2" exists`},
		{"internal chain with a sentinel", fmt.Errorf("vault at 10.0.0.7: path secret/data/tokensvc/x: %w", store.ErrNotFound), http.StatusNotFound, "not found"},
		{"fixed detail wins", fmt.Errorf("jti abc reused: %w", deviceauth.ErrUnauthenticated), http.StatusUnauthorized, "device authentication failed"},
		{"unexpected", errors.New("key 0xdeadbeef does not decode"), http.StatusInternalServerError, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, detail := classify(tt.err)
			if status != tt.wantStatus || detail != tt.wantDetail {
				t.Fatalf("got %d %q, want %d %q", status, detail, tt.wantStatus, tt.wantDetail)
			}
		})
	}
}
