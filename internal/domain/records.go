package domain

import (
	"bytes"
	"maps"
	"slices"
	"time"
)

// HubKind is the kind of target a hub stands for (package target has one package per
// kind; the constants here are the Azure kinds the service began with).
type HubKind string

// Hub kinds.
const (
	KindIoTHub    HubKind = "iothub"
	KindEventHubs HubKind = "eventhubs"
	KindDPS       HubKind = "dps"
)

// SigningMode says which key signs the tokens of a hub's devices.
type SigningMode string

// Signing modes.
const (
	// SignDeviceKey signs with each device's own (primary) key.
	SignDeviceKey SigningMode = "deviceKey"
	// SignPolicy signs with a hub-level shared access policy key and sets skn.
	SignPolicy SigningMode = "policy"
	// SignGroupKey derives each device's key from a DPS enrollment-group key.
	SignGroupKey SigningMode = "groupKey"
	// SignCustomAuthorizer: devices present a JWT signed by the service's issuer key
	// to an AWS IoT custom authorizer (awsiot).
	SignCustomAuthorizer SigningMode = "customAuthorizer"
	// SignJWT: devices present a JWT signed by the service's issuer key (jwtbroker).
	SignJWT SigningMode = "jwt"
	// SignCertificate: devices get short-lived X.509 client certificates signed by the
	// hub's CA (POST /token/certificate; package devicecert), not tokens.
	SignCertificate SigningMode = "certificate"
)

// Hub is a target tokens are minted for: an IoT Hub, an Event Hubs entity or a DPS
// instance. Which fields apply, and what they mean, is up to its kind (package target).
type Hub struct {
	Name     string
	Kind     HubKind
	Hostname string // IoT Hub host, Event Hubs namespace host, or DPS global endpoint
	// EntityPath is the event hub name (eventhubs only).
	EntityPath string
	// IDScope is the DPS ID scope (dps only).
	IDScope string
	Mode    SigningMode
	// PolicyName is the shared access policy used in SignPolicy mode (skn).
	PolicyName string
	// PolicyKey is the policy key (SignPolicy) or the enrollment group key (SignGroupKey), as Azure shows it.
	PolicyKey string
	// PolicyKeyText says the policy key signs as its UTF-8 text rather than as the bytes
	// its base64 spells (Event Hubs); the kind sets it in Normalize, so a store that
	// imports the key (Vault Transit) needs no kind rule.
	PolicyKeyText bool
	// GatewayHostName is an IoT Edge gateway devices connect through, if any.
	GatewayHostName string
	// CACert is a PEM bundle devices should trust for this hub or gateway, if any.
	CACert string
	// Transit keeps this hub's keys (device, module and policy keys) in Vault Transit:
	// signatures are computed inside Vault and key material is never stored in records
	// or read back. Only a store that implements transit signing accepts such a hub.
	Transit bool
	// Settings holds a kind's own configuration that no other package interprets: a
	// new kind keeps its settings here, so neither the stores nor the registry change
	// for it (nil when the kind has none). Values are not secret.
	Settings   map[string]string
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	CreatedAt  time.Time
}

// CredentialType is how a device proves its identity to tokensvc.
type CredentialType string

// Credential types. The JWT types each pin exactly one algorithm; the certificate types
// authenticate by TLS client certificate only, never by JWT.
const (
	CredHS256 CredentialType = "hs256"
	CredES256 CredentialType = "es256"
	CredEdDSA CredentialType = "eddsa"
	// CredX509 pins one client certificate by its SHA-256 fingerprint.
	CredX509 CredentialType = "x509"
	// CredX509CA accepts a client certificate issued by the service's client CA whose
	// subject common name is the device ID.
	CredX509CA CredentialType = "x509-ca"
)

// Credential is what a device's assertions or client certificates are verified with.
type Credential struct {
	Type CredentialType
	// Secret is the HS256 bootstrap secret (hs256 only).
	Secret []byte
	// PublicKey is the PEM-encoded public key (es256, eddsa).
	PublicKey string
	// CertFingerprint is the lowercase hex SHA-256 of the pinned certificate's DER
	// encoding (x509 only); not a secret.
	CertFingerprint string
}

// Module is a module identity registered to a device; it has keys of its own.
type Module struct {
	ID           string
	PrimaryKey   string
	SecondaryKey string
}

// Device is a device identity: the hub it belongs to, its SAS keys (empty when the hub
// signs with a policy or group key), its modules and its credential.
type Device struct {
	ID           string
	Hub          string
	PrimaryKey   string
	SecondaryKey string
	Modules      []Module
	Auth         Credential
	Disabled     bool
	// MaxTTL caps token lifetimes below the hub's maximum; zero means the hub's.
	MaxTTL time.Duration
	// RevokedAt refuses assertions issued (and nonces handed out) before it; zero if
	// never revoked.
	RevokedAt time.Time
	// Gateway marks a field gateway: it may obtain its children's tokens.
	Gateway bool
	// Parent is the ID of the gateway this leaf device sits behind; empty if none.
	Parent string
	// ParentCreatedAt is the CreatedAt of the gateway Parent named when it was set, so
	// a later device that re-uses a deleted gateway's ID is not this device's gateway
	// (MayObtainFor). Zero when Parent is empty, and for relations stored before it
	// was recorded.
	ParentCreatedAt time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Module returns the module with the given ID.
func (d *Device) Module(id string) (Module, bool) {
	for _, m := range d.Modules {
		if m.ID == id {
			return m, true
		}
	}
	return Module{}, false
}

// Clone returns a deep copy of d, so a store can hand out and keep devices without
// sharing their Modules or their secret.
func (d Device) Clone() Device {
	d.Modules = slices.Clone(d.Modules)
	d.Auth.Secret = bytes.Clone(d.Auth.Secret)
	return d
}

// Clone returns a deep copy of h, so a store can hand out and keep hubs without
// sharing their Settings map.
func (h Hub) Clone() Hub {
	h.Settings = maps.Clone(h.Settings)
	return h
}
