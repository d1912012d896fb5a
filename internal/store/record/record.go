// Package record is the stored JSON form of hubs and devices that both stores write:
// explicit field names, so renaming or adding a field in package domain cannot silently
// change what existing data means. The embedded file store writes these as they are;
// the Vault store embeds them in records of its own that add Transit bookkeeping.
package record

import (
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Hub is a stored domain.Hub.
type Hub struct {
	Name            string            `json:"name"`
	Kind            string            `json:"kind,omitempty"`
	Hostname        string            `json:"hostname,omitempty"`
	EntityPath      string            `json:"entityPath,omitempty"`
	IDScope         string            `json:"idScope,omitempty"`
	Mode            string            `json:"mode,omitempty"`
	PolicyName      string            `json:"policyName,omitempty"`
	PolicyKey       string            `json:"policyKey,omitempty"`
	PolicyKeyText   bool              `json:"policyKeyText,omitempty"`
	GatewayHostName string            `json:"gatewayHostName,omitempty"`
	CACert          string            `json:"caCert,omitempty"`
	Transit         bool              `json:"transit,omitempty"`
	Settings        map[string]string `json:"settings,omitempty"`
	DefaultTTL      int64             `json:"defaultTTLNanos,omitempty"`
	MaxTTL          int64             `json:"maxTTLNanos,omitempty"`
	CreatedAt       time.Time         `json:"createdAt"`
}

// Module is a stored domain.Module.
type Module struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// Device is a stored domain.Device. Modules and Secret have no omitempty so nil and
// empty survive a round trip as themselves.
type Device struct {
	ID           string    `json:"id"`
	Hub          string    `json:"hub"`
	PrimaryKey   string    `json:"primaryKey,omitempty"`
	SecondaryKey string    `json:"secondaryKey,omitempty"`
	Modules      []Module  `json:"modules"`
	AuthType     string    `json:"authType,omitempty"`
	Secret       []byte    `json:"secret"`
	PublicKey    string    `json:"publicKey,omitempty"`
	CertFP       string    `json:"certFingerprint,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	MaxTTL       int64     `json:"maxTTLNanos,omitempty"`
	RevokedAt    time.Time `json:"revokedAt,omitzero"`
	Gateway      bool      `json:"gateway,omitempty"`
	Parent       string    `json:"parent,omitempty"`
	// ParentCreatedAt is absent from records written before it existed.
	ParentCreatedAt time.Time `json:"parentCreatedAt,omitzero"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
}

// FromHub returns the stored form of h; it shares h's Settings map.
func FromHub(h *domain.Hub) Hub {
	return Hub{
		Name:            h.Name,
		Kind:            string(h.Kind),
		Hostname:        h.Hostname,
		EntityPath:      h.EntityPath,
		IDScope:         h.IDScope,
		Mode:            string(h.Mode),
		PolicyName:      h.PolicyName,
		PolicyKey:       h.PolicyKey,
		PolicyKeyText:   h.PolicyKeyText,
		GatewayHostName: h.GatewayHostName,
		CACert:          h.CACert,
		Transit:         h.Transit,
		Settings:        h.Settings,
		DefaultTTL:      int64(h.DefaultTTL),
		MaxTTL:          int64(h.MaxTTL),
		CreatedAt:       h.CreatedAt,
	}
}

// Domain returns the hub r stores; it shares r's Settings map.
func (r *Hub) Domain() domain.Hub {
	return domain.Hub{
		Name:            r.Name,
		Kind:            domain.HubKind(r.Kind),
		Hostname:        r.Hostname,
		EntityPath:      r.EntityPath,
		IDScope:         r.IDScope,
		Mode:            domain.SigningMode(r.Mode),
		PolicyName:      r.PolicyName,
		PolicyKey:       r.PolicyKey,
		PolicyKeyText:   r.PolicyKeyText,
		GatewayHostName: r.GatewayHostName,
		CACert:          r.CACert,
		Transit:         r.Transit,
		Settings:        r.Settings,
		DefaultTTL:      time.Duration(r.DefaultTTL),
		MaxTTL:          time.Duration(r.MaxTTL),
		CreatedAt:       r.CreatedAt,
	}
}

// FromDevice returns the stored form of d; it shares d's Secret, and copies its modules
// (nil stays nil).
func FromDevice(d *domain.Device) Device {
	r := Device{
		ID:           d.ID,
		Hub:          d.Hub,
		PrimaryKey:   d.PrimaryKey,
		SecondaryKey: d.SecondaryKey,
		AuthType:     string(d.Auth.Type),
		Secret:       d.Auth.Secret,
		PublicKey:    d.Auth.PublicKey,
		CertFP:       d.Auth.CertFingerprint,
		Disabled:     d.Disabled,
		MaxTTL:       int64(d.MaxTTL),
		RevokedAt:    d.RevokedAt,
		Gateway:      d.Gateway,
		Parent:       d.Parent,
		CreatedAt:    d.CreatedAt,
		UpdatedAt:    d.UpdatedAt,

		ParentCreatedAt: d.ParentCreatedAt,
	}
	if d.Modules != nil {
		r.Modules = make([]Module, len(d.Modules))
		for i, m := range d.Modules {
			r.Modules[i] = Module(m)
		}
	}
	return r
}

// Domain returns the device r stores; it shares r's Secret, and copies its modules (nil
// stays nil).
func (r *Device) Domain() domain.Device {
	d := domain.Device{
		ID:           r.ID,
		Hub:          r.Hub,
		PrimaryKey:   r.PrimaryKey,
		SecondaryKey: r.SecondaryKey,
		Auth: domain.Credential{
			Type:            domain.CredentialType(r.AuthType),
			Secret:          r.Secret,
			PublicKey:       r.PublicKey,
			CertFingerprint: r.CertFP,
		},
		Disabled:  r.Disabled,
		MaxTTL:    time.Duration(r.MaxTTL),
		RevokedAt: r.RevokedAt,
		Gateway:   r.Gateway,
		Parent:    r.Parent,
		CreatedAt: r.CreatedAt,
		UpdatedAt: r.UpdatedAt,

		ParentCreatedAt: r.ParentCreatedAt,
	}
	if r.Modules != nil {
		d.Modules = make([]domain.Module, len(r.Modules))
		for i, m := range r.Modules {
			d.Modules[i] = domain.Module(m)
		}
	}
	return d
}
