// Package store defines the records tokensvc keeps (hubs, devices, their keys and
// credentials), the errors every backend returns, and the Store contract that the
// embedded file store and the Vault store both implement.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors returned (wrapped) by every Store implementation.
var (
	// ErrNotFound means the named hub or device does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means a hub or device with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict means the change would break a relation, e.g. deleting a hub that still has devices.
	ErrConflict = errors.New("still in use")
	// ErrUnavailable means the backend could not be reached; the caller may retry later.
	ErrUnavailable = errors.New("store unavailable")
)

// Describe returns an error for clients: what names the record (e.g. `device "d1"`) and
// the result wraps err's sentinel (ErrNotFound, ErrExists, ErrConflict) so errors.Is
// still works, without the backend's internal chain. Other errors come back unchanged,
// to be logged and reported as internal.
func Describe(what string, err error) error {
	for _, s := range []error{ErrNotFound, ErrExists, ErrConflict} {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", what, s)
		}
	}
	return err
}

// HubKind is the kind of Azure service a hub stands for.
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
)

// Hub is a signing target: an IoT Hub, an Event Hubs entity or a DPS instance.
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
	// GatewayHostName is an IoT Edge gateway devices connect through, if any.
	GatewayHostName string
	// CACert is a PEM bundle devices should trust for this hub or gateway, if any.
	CACert string
	// Transit keeps this hub's keys (device, module and policy keys) in Vault Transit:
	// signatures are computed inside Vault and key material is never stored in records
	// or read back. Only a store that implements transit signing accepts such a hub.
	Transit    bool
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
	CreatedAt time.Time
	UpdatedAt time.Time
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

// Page is one page of a device listing.
type Page struct {
	Devices []Device
	// Next is the cursor for the following page, empty on the last page.
	Next string
}

// Store is the persistence contract. Implementations must be safe for concurrent use
// and must never leave a record half-written.
type Store interface {
	// CreateHub stores a new hub; ErrExists if the name is taken.
	CreateHub(ctx context.Context, h Hub) error
	// GetHub returns a hub; ErrNotFound if absent.
	GetHub(ctx context.Context, name string) (Hub, error)
	// ListHubs returns all hubs ordered by name.
	ListHubs(ctx context.Context) ([]Hub, error)
	// DeleteHub removes a hub; ErrNotFound if absent, ErrConflict while devices still use it.
	DeleteHub(ctx context.Context, name string) error

	// CreateDevice stores a new device; ErrExists if the ID is taken, ErrNotFound if its hub is absent.
	CreateDevice(ctx context.Context, d Device) error
	// GetDevice returns a device; ErrNotFound if absent.
	GetDevice(ctx context.Context, id string) (Device, error)
	// ListDevices returns up to limit devices ordered by ID, starting after cursor ("" = first page).
	ListDevices(ctx context.Context, cursor string, limit int) (Page, error)
	// UpdateDevice applies fn to the current record and stores the result atomically;
	// ErrNotFound if absent, or fn's error unchanged (nothing is stored then).
	UpdateDevice(ctx context.Context, id string, fn func(*Device) error) (Device, error)
	// DeleteDevice removes a device; ErrNotFound if absent.
	DeleteDevice(ctx context.Context, id string) error

	// GetSetting returns a named service setting (e.g. the admin token hash); ErrNotFound if unset.
	GetSetting(ctx context.Context, name string) ([]byte, error)
	// PutSetting stores a named service setting.
	PutSetting(ctx context.Context, name string, value []byte) error

	// Close releases the store's resources.
	Close() error
}
