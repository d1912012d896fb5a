// Package iothub is the Azure IoT Hub target kind: devices and modules signing with
// their own keys, or a hub policy scoped to one device (the "token service" pattern),
// directly or through an IoT Edge gateway.
package iothub

import (
	"context"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Kind is the iothub kind.
type Kind struct{}

var (
	_ target.Kind            = Kind{}
	_ target.CertificateKind = Kind{}
)

// Name implements target.Kind.
func (Kind) Name() domain.HubKind { return domain.KindIoTHub }

// Normalize implements target.Kind: mode deviceKey (default) or policy with a valid
// base64 policy key; no Event Hubs or DPS settings.
func (Kind) Normalize(h *domain.Hub) error {
	if err := target.Mode(h, domain.SignDeviceKey, domain.SignPolicy, domain.SignCertificate); err != nil {
		return err
	}
	var cs target.CertificateSettings
	if err := target.DecodeSettings(*h, &cs); err != nil {
		return err
	}
	if err := cs.Normalize(h.Mode); err != nil {
		return err
	}
	if err := target.EncodeSettings(h, &cs); err != nil {
		return err
	}
	if h.EntityPath != "" || h.IDScope != "" {
		return domain.Invalid("entityPath and idScope do not apply to an iothub hub")
	}
	switch h.Mode {
	case domain.SignDeviceKey, domain.SignCertificate:
		if h.PolicyName != "" || h.PolicyKey != "" {
			return domain.Invalid("policyName and policyKey apply only to modes policy and groupKey")
		}
	case domain.SignPolicy:
		if h.PolicyName == "" || h.PolicyKey == "" {
			return domain.Invalid("mode policy needs policyName and policyKey")
		}
		if err := domain.CheckKey(h.PolicyKey); err != nil {
			return domain.Invalid("policyKey: %v", err)
		}
	}
	return nil
}

// PrepareDevice implements target.Kind.
func (Kind) PrepareDevice(h domain.Hub, d *domain.Device) error {
	if err := target.CheckModules(d); err != nil {
		return err
	}
	return target.IdentityKeys(h, d)
}

// Mint implements target.Kind.
func (Kind) Mint(ctx context.Context, s target.Signers, h domain.Hub, r target.Request) (target.Minted, error) {
	if err := target.NoTokens(h); err != nil {
		return target.Minted{}, err
	}
	if r.ModuleID != "" {
		if _, ok := r.Device.Module(r.ModuleID); !ok {
			return target.Minted{}, fmt.Errorf("module %q of device %q: %w", r.ModuleID, r.Device.ID, target.ErrForbidden)
		}
	}
	id := signer.Identity{Host: h.Hostname, DeviceID: r.Device.ID, ModuleID: r.ModuleID, GatewayHostName: h.GatewayHostName}
	req := signer.Request{Resource: id.Resource()}
	key := target.KeyIdentity
	if h.Mode == domain.SignPolicy {
		// The token service pattern: the hub policy signs, scoped to this one identity.
		key, req.PolicyName = target.KeyPolicy, h.PolicyName
	}
	return target.MintSAS(ctx, s, h, r, key, req, func(tok string) signer.Profiles {
		return signer.IoTHubProfiles(id, tok, r.Transport)
	})
}
