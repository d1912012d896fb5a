package vaultstore

import (
	"context"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
)

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

// PendingHMAC reports how many HMACs with Transit key name wait behind the call in
// flight; PendingSign the same for signatures with issuer key kid.
func (s *Store) PendingHMAC(name string) int { return s.batch.hmac.Pending(name) }

// PendingSign is PendingHMAC for the signatures of issuer key kid with alg.
func (s *Store) PendingSign(kid string, alg domain.IssuerAlg) int {
	name, _ := s.issuerKeyName(kid)
	return s.batch.sign.Pending(signKey(name, alg))
}

// HMACInput submits a raw input (as sent to Transit, normally base64) for an HMAC
// with Transit key name, through the batcher: tests use it to put an input Transit
// refuses into a batch, which HMAC itself never sends.
func (s *Store) HMACInput(ctx context.Context, name, input string) ([]byte, error) {
	return do(ctx, s.batch.hmac, s.hmacCall, name, input)
}

// SignInput is HMACInput for signatures with issuer key kid.
func (s *Store) SignInput(ctx context.Context, kid string, alg domain.IssuerAlg, input string) ([]byte, error) {
	name, _ := s.issuerKeyName(kid)
	return do(ctx, s.batch.sign, s.signCall, signKey(name, alg), input)
}

// SetHubSeenTTL sets how long a hub read may stand in for the read before a create,
// until the test ends (a test that needs the reuse to happen on a slow machine).
func SetHubSeenTTL(tb interface{ Cleanup(func()) }, d time.Duration) {
	old := hubSeenTTL
	hubSeenTTL = d
	tb.Cleanup(func() { hubSeenTTL = old })
}

// PendingMarkers reports how many creates on hub wait for the marker write in flight.
func (s *Store) PendingMarkers(hub string) int { return s.groups.mark.Pending(hub) }

// SeenHubs is how many recent hub reads (records, policy keys among them) the store
// holds in memory.
func (s *Store) SeenHubs() int {
	s.hubs.mu.Lock()
	defer s.hubs.mu.Unlock()
	return len(s.hubs.seen)
}
