package filestore_test

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// TestHubsAreNotShared: what a caller does to a hub it passed in or got back never
// reaches the store's copy.
func TestHubsAreNotShared(t *testing.T) {
	s := mustOpen(t, storePath(t), newKey(t))
	defer mustClose(t, s)
	in := domain.Hub{Name: "h", Settings: map[string]string{"k": "v"}}
	must(t, s.CreateHub(t.Context(), in))
	in.Settings["k"] = "changed by the caller after create"

	got, err := s.GetHub(t.Context(), "h")
	must(t, err)
	got.Settings["k"] = "changed by the caller after get"
	list, err := s.ListHubs(t.Context())
	must(t, err)
	list[0].Settings["k"] = "changed by the caller after list"

	again, err := s.GetHub(t.Context(), "h")
	must(t, err)
	if v := again.Settings["k"]; v != "v" {
		t.Fatalf("got setting %q, want %q", v, "v")
	}
}
