package target

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// Helpers for the rules the SAS kinds share about which identities carry keys.

// CheckModules checks module IDs: valid and not listed twice.
func CheckModules(d *domain.Device) error {
	seen := make(map[string]bool, len(d.Modules))
	for _, m := range d.Modules {
		if !domain.ValidID(m.ID) {
			return domain.Invalid("moduleId %q is not a valid module ID", m.ID)
		}
		if seen[m.ID] {
			return domain.Invalid("moduleId %q is listed twice", m.ID)
		}
		seen[m.ID] = true
	}
	return nil
}

// IdentityKeys enforces which identities carry SAS keys under the hub's signing mode:
// under deviceKey every device and module has a primary and secondary key (generated
// when missing); under any other mode none has.
func IdentityKeys(h domain.Hub, d *domain.Device) error {
	if h.Mode != domain.SignDeviceKey {
		if d.PrimaryKey != "" || d.SecondaryKey != "" {
			return domain.Invalid("hub %q signs with its %s; devices take no keys", h.Name, h.Mode)
		}
		for _, m := range d.Modules {
			if m.PrimaryKey != "" || m.SecondaryKey != "" {
				return domain.Invalid("hub %q signs with its %s; modules take no keys", h.Name, h.Mode)
			}
		}
		return nil
	}
	if err := domain.FillKeyPair(&d.PrimaryKey, &d.SecondaryKey); err != nil {
		return err
	}
	for i := range d.Modules {
		if err := domain.FillKeyPair(&d.Modules[i].PrimaryKey, &d.Modules[i].SecondaryKey); err != nil {
			if pe, ok := errors.AsType[*domain.PublicError](err); ok {
				return domain.Invalid("module %q: %s", d.Modules[i].ID, pe.Public())
			}
			return err
		}
	}
	return nil
}

// DeviceKeys is PrepareDevice for the kinds whose hubs have no modules: none listed,
// and keys only where the hub's mode wants them (IdentityKeys).
func DeviceKeys(h domain.Hub, d *domain.Device) error {
	if err := NoModules(h, d); err != nil {
		return err
	}
	return IdentityKeys(h, d)
}

// Mode checks h's signing mode against the kind's modes, the first being the default
// written back when the hub names none.
func Mode(h *domain.Hub, modes ...domain.SigningMode) error {
	if h.Mode == "" {
		h.Mode = modes[0]
	}
	if slices.Contains(modes, h.Mode) {
		return nil
	}
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = string(m)
	}
	list := names[0]
	if n := len(names); n > 1 {
		list = strings.Join(names[:n-1], ", ") + " or " + names[n-1]
	}
	return domain.Invalid("mode: a %s hub signs with mode %s, not %s", h.Kind, list, h.Mode)
}

// NoModules refuses modules, for kinds that have none.
func NoModules(h domain.Hub, d *domain.Device) error {
	if len(d.Modules) > 0 {
		return domain.Invalid("modules exist only on iothub hubs, not on %s hub %q", h.Kind, h.Name)
	}
	return nil
}

// ServerName is the host a device verifies: the gateway's when the hub has one.
func ServerName(h domain.Hub) string {
	if h.GatewayHostName != "" {
		return h.GatewayHostName
	}
	return h.Hostname
}

// NoModuleCredential refuses a module's credential on a kind that has no modules.
func NoModuleCredential(r Request) error {
	if r.ModuleID != "" {
		return fmt.Errorf("module %q of device %q: %w", r.ModuleID, r.Device.ID, ErrForbidden)
	}
	return nil
}

// MintSAS signs req with the key k names and returns the token with the profiles
// build makes for it, trusting the hub's (or its gateway's) host and CA.
func MintSAS(ctx context.Context, s Signers, h domain.Hub, r Request, k Key, req signer.Request, build func(token string) signer.Profiles) (Minted, error) {
	req.TTL = r.TTL
	tok, err := s.SAS.SignSAS(ctx, h, r.Device, r.ModuleID, k, req)
	if err != nil {
		return Minted{}, err
	}
	return Minted{
		Token:         tok,
		Profiles:      build(tok.Value),
		TLSServerName: ServerName(h),
		CACert:        h.CACert,
	}, nil
}
