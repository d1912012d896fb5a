// Package eventhubs is the Azure Event Hubs target kind: each device publishes to the
// entity under its own publisher name, with a token signed by the entity's send policy.
package eventhubs

import (
	"context"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Kind is the eventhubs kind.
type Kind struct{}

var _ target.Kind = Kind{}

// Name implements target.Kind.
func (Kind) Name() domain.HubKind { return domain.KindEventHubs }

// Normalize implements target.Kind: mode policy with the entity path.
func (Kind) Normalize(h *domain.Hub) error {
	if err := target.Mode(h, domain.SignPolicy); err != nil {
		return err
	}
	if err := target.CheckSettings(*h); err != nil {
		return err
	}
	if h.EntityPath == "" {
		return domain.Invalid("an eventhubs hub needs entityPath, the event hub name")
	}
	if h.IDScope != "" || h.GatewayHostName != "" {
		return domain.Invalid("idScope and gatewayHostName do not apply to an eventhubs hub")
	}
	if h.PolicyName == "" || h.PolicyKey == "" {
		return domain.Invalid("mode policy needs policyName and policyKey")
	}
	h.PolicyKeyText = true // Event Hubs signs with the key's text, not its bytes
	return nil
}

// PrepareDevice implements target.Kind: no modules and no device keys.
func (Kind) PrepareDevice(h domain.Hub, d *domain.Device) error {
	return target.DeviceKeys(h, d)
}

// Mint implements target.Kind. The key is the policy key's UTF-8 text, not base64.
func (Kind) Mint(ctx context.Context, s target.Signers, h domain.Hub, r target.Request) (target.Minted, error) {
	if err := target.NoModuleCredential(r); err != nil {
		return target.Minted{}, err
	}
	req := signer.Request{
		Resource:   signer.EventHubsPublisherResource(h.Hostname, h.EntityPath, r.Device.ID),
		PolicyName: h.PolicyName,
	}
	return target.MintSAS(ctx, s, h, r, target.KeyPolicyText, req, func(tok string) signer.Profiles {
		return signer.EventHubsProfiles(h.Hostname, h.EntityPath, r.Device.ID, tok, r.Transport)
	})
}
