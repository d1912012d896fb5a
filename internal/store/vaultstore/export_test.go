package vaultstore

import "time"

// Test hooks: the key wrap and the Transit key naming, which tests need to check
// Vault's state directly.
var (
	WrapKWP   = wrapKWP
	UnwrapKWP = unwrapKWP
)

// ClaimTTL is how old a claim must be before another operation takes it over.
const ClaimTTL = claimTTL

// DeviceKeyName is deviceKeyName for tests; slot is "primary" or "secondary".
func (s *Store) DeviceKeyName(deviceID, moduleID, slot string) string {
	return s.deviceKeyName(deviceID, moduleID, slot)
}

// HubKeyName is hubKeyName for tests.
func (s *Store) HubKeyName(hub string) string { return s.hubKeyName(hub) }

// SetHubSeenTTL sets how long a hub read may stand in for the read before a create,
// until the test ends (a test that needs the reuse to happen on a slow machine).
func SetHubSeenTTL(tb interface{ Cleanup(func()) }, d time.Duration) {
	old := hubSeenTTL
	hubSeenTTL = d
	tb.Cleanup(func() { hubSeenTTL = old })
}
