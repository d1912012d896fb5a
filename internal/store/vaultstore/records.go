package vaultstore

import (
	"encoding/hex"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// The record types spell out the stored JSON with explicit names, like filestore's
// wire types, so renaming or adding a field in package store cannot silently change
// what existing Vault data means.

type hubRecord struct {
	Name            string            `json:"name"`
	Kind            string            `json:"kind,omitempty"`
	Hostname        string            `json:"hostname,omitempty"`
	EntityPath      string            `json:"entityPath,omitempty"`
	IDScope         string            `json:"idScope,omitempty"`
	Mode            string            `json:"mode,omitempty"`
	PolicyName      string            `json:"policyName,omitempty"`
	PolicyKey       string            `json:"policyKey,omitempty"`
	GatewayHostName string            `json:"gatewayHostName,omitempty"`
	CACert          string            `json:"caCert,omitempty"`
	Transit         bool              `json:"transit,omitempty"`
	Settings        map[string]string `json:"settings,omitempty"`
	// TransitKey names the Transit key holding the policy or group key (Transit hubs
	// in modes policy and groupKey).
	TransitKey string    `json:"transitKey,omitempty"`
	DefaultTTL int64     `json:"defaultTTLNanos,omitempty"`
	MaxTTL     int64     `json:"maxTTLNanos,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	// DeletingSince is set while DeleteHub checks that no device uses the hub; until it
	// is claimTTL old, CreateDevice refuses the hub.
	DeletingSince *time.Time `json:"deletingSince,omitempty"`
}

type moduleRecord struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// deviceRecord keeps Modules and Secret without omitempty so nil and empty survive a
// round trip as themselves.
type deviceRecord struct {
	ID           string         `json:"id"`
	Hub          string         `json:"hub"`
	PrimaryKey   string         `json:"primaryKey,omitempty"`
	SecondaryKey string         `json:"secondaryKey,omitempty"`
	Modules      []moduleRecord `json:"modules"`
	AuthType     string         `json:"authType,omitempty"`
	Secret       []byte         `json:"secret"`
	PublicKey    string         `json:"publicKey,omitempty"`
	CertFP       string         `json:"certFingerprint,omitempty"`
	Disabled     bool           `json:"disabled,omitempty"`
	MaxTTL       int64          `json:"maxTTLNanos,omitempty"`
	RevokedAt    time.Time      `json:"revokedAt,omitzero"`
	CreatedAt    time.Time      `json:"createdAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
	// TransitKeys names the Transit keys imported for this device and its modules; the
	// key fields above are empty then. DeleteDevice deletes exactly these.
	TransitKeys []string `json:"transitKeys,omitempty"`
}

// markerRecord says a device uses a hub; the ID is in the path too, but a readable
// value makes the layout self-explaining in the Vault UI.
type markerRecord struct {
	Device string `json:"device"`
}

type settingRecord struct {
	Value []byte `json:"value"`
}

// claimRecord holds a device or hub name while its Transit keys are imported or deleted.
type claimRecord struct {
	Owner     string    `json:"owner"`
	Op        string    `json:"op"`
	ClaimedAt time.Time `json:"claimedAt"`
}

func toHubRecord(h *domain.Hub) hubRecord {
	return hubRecord{
		Name:            h.Name,
		Kind:            string(h.Kind),
		Hostname:        h.Hostname,
		EntityPath:      h.EntityPath,
		IDScope:         h.IDScope,
		Mode:            string(h.Mode),
		PolicyName:      h.PolicyName,
		PolicyKey:       h.PolicyKey,
		GatewayHostName: h.GatewayHostName,
		CACert:          h.CACert,
		Transit:         h.Transit,
		Settings:        h.Settings,
		DefaultTTL:      int64(h.DefaultTTL),
		MaxTTL:          int64(h.MaxTTL),
		CreatedAt:       h.CreatedAt,
	}
}

func (r *hubRecord) hub() domain.Hub {
	return domain.Hub{
		Name:            r.Name,
		Kind:            domain.HubKind(r.Kind),
		Hostname:        r.Hostname,
		EntityPath:      r.EntityPath,
		IDScope:         r.IDScope,
		Mode:            domain.SigningMode(r.Mode),
		PolicyName:      r.PolicyName,
		PolicyKey:       r.PolicyKey,
		GatewayHostName: r.GatewayHostName,
		CACert:          r.CACert,
		Transit:         r.Transit,
		Settings:        r.Settings,
		DefaultTTL:      time.Duration(r.DefaultTTL),
		MaxTTL:          time.Duration(r.MaxTTL),
		CreatedAt:       r.CreatedAt,
	}
}

// keyedInTransit reports whether the hub's devices keep their own keys in Transit.
func (r *hubRecord) keyedInTransit() bool {
	return r.Transit && domain.SigningMode(r.Mode) == domain.SignDeviceKey
}

// deleting reports whether a DeleteHub is under way (and not a leftover of a crash).
func (r *hubRecord) deleting(now time.Time) bool {
	return r.DeletingSince != nil && now.Sub(*r.DeletingSince) < claimTTL
}

func toDeviceRecord(d *domain.Device) deviceRecord {
	r := deviceRecord{
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
		CreatedAt:    d.CreatedAt,
		UpdatedAt:    d.UpdatedAt,
	}
	if d.Modules != nil {
		r.Modules = make([]moduleRecord, len(d.Modules))
		for i, m := range d.Modules {
			r.Modules[i] = moduleRecord(m)
		}
	}
	return r
}

// device returns the record as a domain.Device that shares no memory with it.
func (r *deviceRecord) device() domain.Device {
	d := domain.Device{
		ID:           r.ID,
		Hub:          r.Hub,
		PrimaryKey:   r.PrimaryKey,
		SecondaryKey: r.SecondaryKey,
		Auth: domain.Credential{
			Type:            domain.CredentialType(r.AuthType),
			PublicKey:       r.PublicKey,
			CertFingerprint: r.CertFP,
		},
		Disabled:  r.Disabled,
		MaxTTL:    time.Duration(r.MaxTTL),
		RevokedAt: r.RevokedAt,
		CreatedAt: r.CreatedAt,
		UpdatedAt: r.UpdatedAt,
	}
	if r.Secret != nil {
		d.Auth.Secret = append([]byte{}, r.Secret...)
	}
	if r.Modules != nil {
		d.Modules = make([]domain.Module, len(r.Modules))
		for i, m := range r.Modules {
			d.Modules[i] = domain.Module(m)
		}
	}
	return d
}

// hasKeyMaterial reports whether any SAS key field of the device or its modules is set.
func hasKeyMaterial(d *domain.Device) bool {
	if d.PrimaryKey != "" || d.SecondaryKey != "" {
		return true
	}
	for _, m := range d.Modules {
		if m.PrimaryKey != "" || m.SecondaryKey != "" {
			return true
		}
	}
	return false
}

// enc turns a name into one path segment: lowercase hex of its bytes. It is reversible,
// keeps case distinct, needs no escaping for any character a device ID may hold, and
// sorts exactly as the bytes do.
func enc(name string) string { return hex.EncodeToString([]byte(name)) }

// dec reverses enc; ok is false for a segment enc cannot have produced.
func dec(seg string) (string, bool) {
	b, err := hex.DecodeString(seg)
	if err != nil || seg != hex.EncodeToString(b) {
		return "", false
	}
	return string(b), true
}

func hubPath(name string) string       { return "hubs/" + enc(name) }
func devicePath(id string) string      { return "devices/" + enc(id) }
func settingPath(name string) string   { return "settings/" + enc(name) }
func markerFolder(hub string) string   { return "hubdevices/" + enc(hub) }
func markerPath(hub, id string) string { return markerFolder(hub) + "/" + enc(id) }
func claimPath(kind, name string) string {
	return "claims/" + kind + "/" + enc(name)
}
