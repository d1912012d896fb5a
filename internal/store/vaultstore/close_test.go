package vaultstore_test

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestCloseDropsRecentHubReads: a create remembers the hub record it read, and in KV
// mode a policy hub's record holds its shared access key; Close must not leave it in
// memory for as long as something holds the Store.
func TestCloseDropsRecentHubReads(t *testing.T) {
	srv := vaulttest.Start(t)
	s := mustStore(t, srv)
	h := iotHub("h-policy-kv", false)
	h.Mode, h.PolicyName, h.PolicyKey = domain.SignPolicy, "device", testKey("pol")
	mustCreateHub(t, s, h)
	mustCreateDevice(t, s, domain.Device{ID: "d1", Hub: h.Name})
	if n := s.SeenHubs(); n == 0 {
		t.Fatal("no hub read remembered after a create: the test does not exercise the cache")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := s.SeenHubs(); n != 0 {
		t.Errorf("after Close: %d hub records (policy key included) kept in memory, want none", n)
	}
}
