// Package tokens decides what an authenticated device gets: which key signs, for which
// resource, for how long, and with which connection settings.
package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
)

// ErrForbidden means the device may not have the token it asked for (e.g. a module that
// is not registered to it).
var ErrForbidden = errors.New("forbidden")

// RefreshFraction is the share of a token's lifetime after which a device should fetch a
// new one; the Azure SDKs renew at 80-85 %.
const RefreshFraction = 0.8

// HubGetter is the part of the store the issuer reads.
type HubGetter interface {
	GetHub(ctx context.Context, name string) (store.Hub, error)
}

// TransitSigner computes HMACs with keys that never leave the key store (Vault Transit).
type TransitSigner interface {
	// HMAC returns HMAC-SHA256(key, msg), where key is the hub's policy or group key when
	// the hub signs with one, else the primary key of the device (moduleID "") or of its
	// module. It returns store.ErrNotFound (wrapped) for a missing key and
	// store.ErrUnavailable when the key store cannot be reached.
	HMAC(ctx context.Context, hub store.Hub, deviceID, moduleID string, msg []byte) ([]byte, error)
}

// Issuer mints tokens for authenticated devices.
type Issuer struct {
	hubs    HubGetter
	signer  *signer.Signer
	transit TransitSigner
}

// NewIssuer returns an Issuer reading hubs from hubs and signing with s. transit signs
// for hubs whose keys live in Vault Transit; nil when the store has no such hubs.
func NewIssuer(hubs HubGetter, s *signer.Signer, transit TransitSigner) *Issuer {
	return &Issuer{hubs: hubs, signer: s, transit: transit}
}

// Request is what an authenticated device asks for.
type Request struct {
	// ModuleID asks for a module token; the module must be registered to the device.
	ModuleID string
	// TTL is the requested lifetime; zero means the hub default. It is capped by policy.
	TTL       time.Duration
	Transport signer.Transport
}

// Issued is a minted token with its connection settings.
type Issued struct {
	Hub          store.Hub
	Token        signer.Token
	Profiles     signer.Profiles
	IssuedAt     time.Time
	RefreshAfter time.Time
	// TLSServerName and CACert tell the device what to trust.
	TLSServerName string
	CACert        string
}

// Issue mints a token for device d (already authenticated) as r asks.
func (i *Issuer) Issue(ctx context.Context, d store.Device, r Request) (Issued, error) {
	hub, err := i.hubs.GetHub(ctx, d.Hub)
	if err != nil {
		return Issued{}, fmt.Errorf("hub of device %q: %w", d.ID, err)
	}
	if r.Transport == "" {
		r.Transport = signer.TCP
	}
	var mod store.Module
	if r.ModuleID != "" {
		m, ok := d.Module(r.ModuleID)
		if !ok || hub.Kind != store.KindIoTHub {
			return Issued{}, fmt.Errorf("module %q of device %q: %w", r.ModuleID, d.ID, ErrForbidden)
		}
		mod = m
	}

	req := signer.Request{TTL: lifetime(hub, d, r.TTL)}
	// keyText is the key as Azure shows it when it is held here; with Transit, remote
	// names the key Vault holds instead (deviceID, moduleID as TransitSigner reads them).
	var (
		keyText string
		enc     = signer.KeyBase64
		build   func(token string) signer.Profiles
	)
	switch hub.Kind {
	case store.KindIoTHub:
		id := signer.Identity{Host: hub.Hostname, DeviceID: d.ID, ModuleID: r.ModuleID, GatewayHostName: hub.GatewayHostName}
		req.Resource = id.Resource()
		keyText = d.PrimaryKey
		if r.ModuleID != "" {
			keyText = mod.PrimaryKey
		}
		if hub.Mode == store.SignPolicy {
			// The token service pattern: the hub policy signs, scoped to this one identity.
			keyText, req.PolicyName = hub.PolicyKey, hub.PolicyName
		}
		build = func(tok string) signer.Profiles { return signer.IoTHubProfiles(id, tok, r.Transport) }
	case store.KindEventHubs:
		req.Resource = signer.EventHubsPublisherResource(hub.Hostname, hub.EntityPath, d.ID)
		req.PolicyName = hub.PolicyName
		keyText, enc = hub.PolicyKey, signer.KeyUTF8
		build = func(tok string) signer.Profiles {
			return signer.EventHubsProfiles(hub.Hostname, hub.EntityPath, d.ID, tok, r.Transport)
		}
	case store.KindDPS:
		req.Resource = signer.DPSRegistrationResource(hub.IDScope, d.ID)
		req.PolicyName = signer.DPSPolicyName
		keyText = d.PrimaryKey
		build = func(tok string) signer.Profiles {
			return signer.DPSProfiles(hub.Hostname, hub.IDScope, d.ID, tok, r.Transport)
		}
	default:
		return Issued{}, fmt.Errorf("hub %q has unknown kind %q", hub.Name, hub.Kind)
	}

	tok, err := i.sign(ctx, hub, d.ID, r.ModuleID, keyText, enc, req)
	if err != nil {
		return Issued{}, err
	}
	now := tok.IssuedAt
	lifetime := tok.ExpiresAt.Sub(now)
	serverName := hub.Hostname
	if hub.GatewayHostName != "" {
		serverName = hub.GatewayHostName
	}
	return Issued{
		Hub:           hub,
		Token:         tok,
		Profiles:      build(tok.Value),
		IssuedAt:      now,
		RefreshAfter:  now.Add(time.Duration(float64(lifetime) * RefreshFraction)).Truncate(time.Second),
		TLSServerName: serverName,
		CACert:        hub.CACert,
	}, nil
}

// sign mints req with the key the hub's mode selects: held here (keyText), or in Transit.
func (i *Issuer) sign(ctx context.Context, hub store.Hub, deviceID, moduleID, keyText string, enc signer.KeyEncoding, req signer.Request) (signer.Token, error) {
	groupDerived := hub.Kind == store.KindDPS && hub.Mode == store.SignGroupKey
	if hub.Transit {
		if i.transit == nil {
			return signer.Token{}, fmt.Errorf("hub %q keeps its keys in Transit, but the store has no Transit signer", hub.Name)
		}
		if !groupDerived {
			return i.signer.SignWith(req, func(msg []byte) ([]byte, error) {
				return i.transit.HMAC(ctx, hub, deviceID, moduleID, msg)
			})
		}
		// The group key stays in Vault; the per-device key derived from it is used here.
		k, err := i.transit.HMAC(ctx, hub, deviceID, "", []byte(deviceID))
		if err != nil {
			return signer.Token{}, err
		}
		req.Key = k
		return i.signer.Sign(req), nil
	}
	if groupDerived {
		var err error
		if keyText, err = signer.DeriveDeviceKey(hub.PolicyKey, deviceID); err != nil {
			return signer.Token{}, fmt.Errorf("group key of hub %q: %w", hub.Name, err)
		}
	}
	key, err := signer.DecodeKey(keyText, enc)
	if err != nil {
		return signer.Token{}, fmt.Errorf("signing key for %q on hub %q: %w", deviceID, hub.Name, err)
	}
	req.Key = key
	return i.signer.Sign(req), nil
}

// lifetime applies policy: the request (or the hub default), capped by the hub maximum
// and the device's own cap.
func lifetime(h store.Hub, d store.Device, requested time.Duration) time.Duration {
	ttl := requested
	if ttl <= 0 {
		ttl = h.DefaultTTL
	}
	limit := h.MaxTTL
	if d.MaxTTL > 0 && d.MaxTTL < limit {
		limit = d.MaxTTL
	}
	return min(ttl, limit)
}
