// Package tokens decides what an authenticated device gets: it applies the lifetime
// policy, hands the mint to the hub's kind (package target), and signs with the key the
// kind names — held here, or in Vault Transit.
package tokens

import (
	"context"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// ErrForbidden means the device may not have the token it asked for (e.g. a module that
// is not registered to it).
var ErrForbidden = target.ErrForbidden

// RefreshFraction is the share of a token's lifetime after which a device should fetch a
// new one; the Azure SDKs renew at 80-85 %.
const RefreshFraction = 0.8

// HubGetter is the part of the store the issuer reads.
type HubGetter interface {
	GetHub(ctx context.Context, name string) (domain.Hub, error)
}

// TransitSigner computes HMACs with keys that never leave the key store (Vault Transit).
type TransitSigner interface {
	// HMAC returns HMAC-SHA256(key, msg), where key is the hub's policy or group key when
	// the hub signs with one, else the primary key of the device (moduleID "") or of its
	// module. It returns store.ErrNotFound (wrapped) for a missing key and
	// store.ErrUnavailable when the key store cannot be reached.
	HMAC(ctx context.Context, hub domain.Hub, deviceID, moduleID string, msg []byte) ([]byte, error)
}

// Issuer mints tokens for authenticated devices.
type Issuer struct {
	hubs    HubGetter
	kinds   *target.Set
	signer  *signer.Signer
	transit TransitSigner
	keys    target.IssuerSigner
}

var _ target.SASSigner = (*Issuer)(nil)

// NewIssuer returns an Issuer reading hubs from hubs, minting through their kinds and
// signing with s. transit signs for hubs whose keys live in Vault Transit; nil when
// the store has no such hubs. keys signs with the service's issuer keys, for the kinds
// that mint JWTs; nil when the service has none.
func NewIssuer(hubs HubGetter, kinds *target.Set, s *signer.Signer, transit TransitSigner, keys target.IssuerSigner) *Issuer {
	return &Issuer{hubs: hubs, kinds: kinds, signer: s, transit: transit, keys: keys}
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
	Hub          domain.Hub
	Token        signer.Token
	Profiles     signer.Profiles
	IssuedAt     time.Time
	RefreshAfter time.Time
	// TLSServerName and CACert tell the device what to trust.
	TLSServerName string
	CACert        string
	// Signature is the kind's detached signature of the token, if any.
	Signature string
}

// Issue mints a token for device d (already authenticated) as r asks.
func (i *Issuer) Issue(ctx context.Context, d domain.Device, r Request) (Issued, error) {
	hub, err := i.hubs.GetHub(ctx, d.Hub)
	if err != nil {
		return Issued{}, fmt.Errorf("hub of device %q: %w", d.ID, err)
	}
	kind, err := i.kinds.Lookup(hub.Kind)
	if err != nil {
		// A stored hub of a kind this build does not serve is the service's fault, not
		// the device's: reported as internal, not with the operator's wording.
		return Issued{}, fmt.Errorf("hub %q has kind %q, which this build does not serve", hub.Name, hub.Kind)
	}
	if r.Transport == "" {
		r.Transport = signer.TCP
	}
	m, err := kind.Mint(ctx, target.Signers{SAS: i, Issuer: i.keys}, hub, target.Request{
		Device:    d,
		ModuleID:  r.ModuleID,
		TTL:       domain.Lifetime(hub, d, r.TTL),
		Transport: r.Transport,
		Now:       i.signer.Now(),
	})
	if err != nil {
		return Issued{}, err
	}
	now := m.Token.IssuedAt
	lifetime := m.Token.ExpiresAt.Sub(now)
	return Issued{
		Hub:           hub,
		Token:         m.Token,
		Profiles:      m.Profiles,
		IssuedAt:      now,
		RefreshAfter:  now.Add(time.Duration(float64(lifetime) * RefreshFraction)).Truncate(time.Second),
		TLSServerName: m.TLSServerName,
		CACert:        m.CACert,
		Signature:     m.Signature,
	}, nil
}

// SignSAS implements target.SASSigner: it signs req with the key k names, held in the
// record or in Transit.
func (i *Issuer) SignSAS(ctx context.Context, hub domain.Hub, d domain.Device, moduleID string, k target.Key, req signer.Request) (signer.Token, error) {
	deviceID := d.ID
	if hub.Transit {
		if i.transit == nil {
			return signer.Token{}, fmt.Errorf("hub %q keeps its keys in Transit, but the store has no Transit signer", hub.Name)
		}
		if k != target.KeyGroupDerived {
			return i.signer.SignWith(req, func(msg []byte) ([]byte, error) {
				return i.transit.HMAC(ctx, hub, deviceID, moduleID, msg)
			})
		}
		// The group key stays in Vault; the per-device key derived from it is used here.
		key, err := i.transit.HMAC(ctx, hub, deviceID, "", []byte(deviceID))
		if err != nil {
			return signer.Token{}, err
		}
		req.Key = key
		return i.signer.Sign(req), nil
	}
	key, err := localKey(hub, d, moduleID, k)
	if err != nil {
		return signer.Token{}, err
	}
	req.Key = key
	return i.signer.Sign(req), nil
}

// localKey returns the bytes of the key k names when the record holds it.
func localKey(hub domain.Hub, d domain.Device, moduleID string, k target.Key) ([]byte, error) {
	deviceID := d.ID
	var (
		text string
		enc  = signer.KeyBase64
	)
	switch k {
	case target.KeyPolicy:
		text = hub.PolicyKey
	case target.KeyPolicyText:
		text, enc = hub.PolicyKey, signer.KeyUTF8
	case target.KeyGroupDerived:
		var err error
		if text, err = signer.DeriveDeviceKey(hub.PolicyKey, deviceID); err != nil {
			return nil, fmt.Errorf("group key of hub %q: %w", hub.Name, err)
		}
	default:
		text = d.PrimaryKey
		if moduleID != "" {
			m, ok := d.Module(moduleID)
			if !ok {
				return nil, fmt.Errorf("module %q of device %q: %w", moduleID, deviceID, ErrForbidden)
			}
			text = m.PrimaryKey
		}
	}
	key, err := signer.DecodeKey(text, enc)
	if err != nil {
		return nil, fmt.Errorf("signing key for %q on hub %q: %w", deviceID, hub.Name, err)
	}
	return key, nil
}
