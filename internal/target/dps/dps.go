// Package dps is the Azure Device Provisioning Service target kind: a registration
// token signed with the individual enrollment key, or with a key derived per device
// from an enrollment-group key.
package dps

import (
	"context"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Kind is the dps kind.
type Kind struct{}

var _ target.Kind = Kind{}

// Name implements target.Kind.
func (Kind) Name() domain.HubKind { return domain.KindDPS }

// Normalize implements target.Kind: mode deviceKey (default) or groupKey, and the ID
// scope.
func (Kind) Normalize(h *domain.Hub) error {
	if err := target.Mode(h, domain.SignDeviceKey, domain.SignGroupKey); err != nil {
		return err
	}
	if err := target.CheckSettings(*h); err != nil {
		return err
	}
	if h.IDScope == "" {
		return domain.Invalid("a dps hub needs idScope")
	}
	if h.EntityPath != "" || h.GatewayHostName != "" {
		return domain.Invalid("entityPath and gatewayHostName do not apply to a dps hub")
	}
	switch h.Mode {
	case domain.SignDeviceKey:
		if h.PolicyName != "" || h.PolicyKey != "" {
			return domain.Invalid("policyName and policyKey apply only to modes policy and groupKey")
		}
	case domain.SignGroupKey:
		if h.PolicyKey == "" {
			return domain.Invalid("mode groupKey needs policyKey, the enrollment group key")
		}
		if h.PolicyName != "" {
			return domain.Invalid("mode groupKey takes no policyName; DPS tokens always use skn=registration")
		}
		if err := domain.CheckKey(h.PolicyKey); err != nil {
			return domain.Invalid("policyKey: %v", err)
		}
	}
	return nil
}

// PrepareDevice implements target.Kind: the device ID must be a valid registration ID.
func (Kind) PrepareDevice(h domain.Hub, d *domain.Device) error {
	if !ValidRegistrationID(d.ID) {
		return domain.Invalid("a DPS registration ID is letters, digits and - . _ : only, and ends in a letter, digit or -")
	}
	return target.DeviceKeys(h, d)
}

// Mint implements target.Kind.
func (Kind) Mint(ctx context.Context, s target.Signers, h domain.Hub, r target.Request) (target.Minted, error) {
	if err := target.NoModuleCredential(r); err != nil {
		return target.Minted{}, err
	}
	req := signer.Request{
		Resource:   signer.DPSRegistrationResource(h.IDScope, r.Device.ID),
		PolicyName: signer.DPSPolicyName,
	}
	key := target.KeyIdentity
	if h.Mode == domain.SignGroupKey {
		key = target.KeyGroupDerived
	}
	return target.MintSAS(ctx, s, h, r, key, req, func(tok string) signer.Profiles {
		return signer.DPSProfiles(h.Hostname, h.IDScope, r.Device.ID, tok, r.Transport)
	})
}

// ValidRegistrationID applies DPS's rules: letters, digits and - . _ : only, ending in
// a letter, digit or '-'.
func ValidRegistrationID(s string) bool {
	if s == "" || strings.ContainsRune("._:", rune(s[len(s)-1])) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}
