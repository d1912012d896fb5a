// Package registry holds the provisioning rules: which hub settings go together, which
// keys a device has under each signing mode, and how missing keys and credentials are
// generated. It sits between the operator API and the store.
package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
)

// ErrInvalid means a request breaks a provisioning rule; its message says which and is
// safe to show the caller (it never holds key material).
var ErrInvalid = errors.New("invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Default token lifetimes for a hub that sets none.
const (
	DefaultTTL = time.Hour
	DefaultMax = 24 * time.Hour
)

// Registry applies provisioning rules on top of a store.
type Registry struct {
	store   store.Store
	now     func() time.Time
	transit bool
}

// Option configures a Registry.
type Option func(*Registry)

// WithTransit allows hubs whose keys live in Vault Transit; only the Vault store has it.
func WithTransit() Option { return func(r *Registry) { r.transit = true } }

// New returns a Registry over s; now defaults to time.Now.
func New(s store.Store, now func() time.Time, opts ...Option) *Registry {
	if now == nil {
		now = time.Now
	}
	r := &Registry{store: s, now: now}
	for _, o := range opts {
		o(r)
	}
	return r
}

// CreateHub checks h against the rules for its kind, fills defaults and stores it.
func (r *Registry) CreateHub(ctx context.Context, h store.Hub) (store.Hub, error) {
	if h.Transit && !r.transit {
		return store.Hub{}, invalid("transit keeps keys in Vault Transit and needs the vault store")
	}
	if err := normalizeHub(&h); err != nil {
		return store.Hub{}, err
	}
	h.CreatedAt = r.now().UTC()
	if err := r.store.CreateHub(ctx, h); err != nil {
		return store.Hub{}, store.Describe(fmt.Sprintf("hub %q", h.Name), err)
	}
	return h, nil
}

func normalizeHub(h *store.Hub) error {
	switch h.Kind {
	case store.KindIoTHub:
		if h.Mode == "" {
			h.Mode = store.SignDeviceKey
		}
		if h.Mode != store.SignDeviceKey && h.Mode != store.SignPolicy {
			return invalid("an iothub hub signs with mode deviceKey or policy, not %s", h.Mode)
		}
		if h.EntityPath != "" || h.IDScope != "" {
			return invalid("entityPath and idScope do not apply to an iothub hub")
		}
	case store.KindEventHubs:
		if h.Mode == "" {
			h.Mode = store.SignPolicy
		}
		if h.Mode != store.SignPolicy {
			return invalid("an eventhubs hub signs with mode policy (a send policy)")
		}
		if h.EntityPath == "" {
			return invalid("an eventhubs hub needs entityPath, the event hub name")
		}
		if h.IDScope != "" || h.GatewayHostName != "" {
			return invalid("idScope and gatewayHostName do not apply to an eventhubs hub")
		}
	case store.KindDPS:
		if h.Mode == "" {
			h.Mode = store.SignDeviceKey
		}
		if h.Mode != store.SignDeviceKey && h.Mode != store.SignGroupKey {
			return invalid("a dps hub signs with mode deviceKey or groupKey, not %s", h.Mode)
		}
		if h.IDScope == "" {
			return invalid("a dps hub needs idScope")
		}
		if h.EntityPath != "" || h.GatewayHostName != "" {
			return invalid("entityPath and gatewayHostName do not apply to a dps hub")
		}
	default:
		return invalid("unknown hub kind %q", h.Kind)
	}

	switch h.Mode {
	case store.SignPolicy:
		if h.PolicyName == "" || h.PolicyKey == "" {
			return invalid("mode policy needs policyName and policyKey")
		}
		if h.Kind == store.KindIoTHub {
			if err := checkKey(h.PolicyKey); err != nil {
				return invalid("policyKey: %v", err)
			}
		}
	case store.SignGroupKey:
		if h.PolicyKey == "" {
			return invalid("mode groupKey needs policyKey, the enrollment group key")
		}
		if h.PolicyName != "" {
			return invalid("mode groupKey takes no policyName; DPS tokens always use skn=registration")
		}
		if err := checkKey(h.PolicyKey); err != nil {
			return invalid("policyKey: %v", err)
		}
	default:
		if h.PolicyName != "" || h.PolicyKey != "" {
			return invalid("policyName and policyKey apply only to modes policy and groupKey")
		}
	}

	if h.CACert != "" {
		if err := checkPEMCerts(h.CACert); err != nil {
			return invalid("caCert: %v", err)
		}
	}
	if h.DefaultTTL == 0 {
		h.DefaultTTL = DefaultTTL
	}
	if h.MaxTTL == 0 {
		h.MaxTTL = max(DefaultMax, h.DefaultTTL)
	}
	if h.DefaultTTL > h.MaxTTL {
		return invalid("defaultTtlSeconds (%d) exceeds maxTtlSeconds (%d)", int(h.DefaultTTL.Seconds()), int(h.MaxTTL.Seconds()))
	}
	return nil
}

// checkKey accepts what IoT Hub accepts: base64 of 16 to 64 bytes.
func checkKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return errors.New("not valid base64")
	}
	if len(b) < 16 || len(b) > 64 {
		return fmt.Errorf("decodes to %d bytes; IoT Hub keys are 16 to 64 bytes", len(b))
	}
	return nil
}

func checkPEMCerts(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %q is not a CERTIFICATE", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return errors.New("a certificate does not parse")
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	return nil
}

// NewKey returns a fresh 256-bit key in the form IoT Hub shows keys.
func NewKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.StdEncoding.EncodeToString(b[:])
}

// NewSecret returns a fresh HS256 device secret: 256 bits, base64url without padding.
// Devices use the secret's text as the HMAC key, so it must travel intact.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Created is a new device with the secrets it was given; they are shown once.
type Created struct {
	Device store.Device
	// Secret is the generated HS256 secret, empty for public-key credentials.
	Secret string
}

// CreateDevice checks d against its hub's signing mode, generates missing keys and the
// HS256 secret, and stores the device.
func (r *Registry) CreateDevice(ctx context.Context, d store.Device) (Created, error) {
	hub, err := r.store.GetHub(ctx, d.Hub)
	if err != nil {
		return Created{}, store.Describe(fmt.Sprintf("hub %q", d.Hub), err)
	}
	if !signer.ValidID(d.ID) {
		return Created{}, invalid("deviceId must be 1 to 128 letters, digits or - . %% _ * ? ! ( ) , : = @ $ '")
	}
	if hub.Kind == store.KindDPS && !validRegistrationID(d.ID) {
		return Created{}, invalid("a DPS registration ID is letters, digits and - . _ : only, and ends in a letter, digit or -")
	}
	if err := keysFor(hub, &d); err != nil {
		return Created{}, err
	}
	var out Created
	if d.Auth.CertFingerprint != "" && d.Auth.Type != store.CredX509 {
		return Created{}, invalid("only an x509 credential takes a certFingerprint")
	}
	switch d.Auth.Type {
	case store.CredHS256:
		if d.Auth.PublicKey != "" {
			return Created{}, invalid("an hs256 credential takes no publicKey")
		}
		out.Secret = NewSecret()
		d.Auth.Secret = []byte(out.Secret)
	case store.CredES256, store.CredEdDSA:
		if _, err := ParsePublicKey(d.Auth.Type, d.Auth.PublicKey); err != nil {
			return Created{}, invalid("auth.publicKey: %v", err)
		}
		d.Auth.Secret = nil
	case store.CredX509, store.CredX509CA:
		// Accepted whether or not this process has mutual TLS or a client CA configured:
		// the record outlives the configuration, and without it the device is simply
		// never authenticated (README, security model).
		if d.Auth.PublicKey != "" {
			return Created{}, invalid("an %s credential takes no publicKey", d.Auth.Type)
		}
		if d.Auth.Type == store.CredX509 && !ValidFingerprint(d.Auth.CertFingerprint) {
			return Created{}, invalid("an x509 credential needs certFingerprint, the SHA-256 of the certificate's DER encoding as 64 lowercase hex digits")
		}
		d.Auth.Secret = nil
	default:
		return Created{}, invalid("unknown credential type %q", d.Auth.Type)
	}
	if d.MaxTTL != 0 && d.MaxTTL < time.Minute {
		return Created{}, invalid("maxTtlSeconds must be at least 60")
	}
	now := r.now().UTC()
	d.CreatedAt, d.UpdatedAt = now, now
	if err := r.store.CreateDevice(ctx, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Created{}, store.Describe(fmt.Sprintf("hub %q", d.Hub), err) // deleted meanwhile
		}
		return Created{}, store.Describe(fmt.Sprintf("device %q", d.ID), err)
	}
	out.Device = d
	return out, nil
}

// keysFor enforces which identities carry keys under the hub's signing mode and fills
// in the missing ones.
func keysFor(hub store.Hub, d *store.Device) error {
	if len(d.Modules) > 0 && hub.Kind != store.KindIoTHub {
		return invalid("modules exist only on iothub hubs")
	}
	seen := make(map[string]bool, len(d.Modules))
	for _, m := range d.Modules {
		if !signer.ValidID(m.ID) {
			return invalid("moduleId %q is not a valid module ID", m.ID)
		}
		if seen[m.ID] {
			return invalid("moduleId %q is listed twice", m.ID)
		}
		seen[m.ID] = true
	}
	if hub.Mode != store.SignDeviceKey {
		if d.PrimaryKey != "" || d.SecondaryKey != "" {
			return invalid("hub %q signs with its %s; devices take no keys", hub.Name, hub.Mode)
		}
		for _, m := range d.Modules {
			if m.PrimaryKey != "" || m.SecondaryKey != "" {
				return invalid("hub %q signs with its %s; modules take no keys", hub.Name, hub.Mode)
			}
		}
		return nil
	}
	if err := fillPair(&d.PrimaryKey, &d.SecondaryKey); err != nil {
		return err
	}
	for i := range d.Modules {
		if err := fillPair(&d.Modules[i].PrimaryKey, &d.Modules[i].SecondaryKey); err != nil {
			return invalid("module %q: %v", d.Modules[i].ID, err)
		}
	}
	return nil
}

func fillPair(primary, secondary *string) error {
	for _, k := range []*string{primary, secondary} {
		if *k == "" {
			*k = NewKey()
			continue
		}
		if err := checkKey(*k); err != nil {
			return invalid("key: %v", err)
		}
	}
	return nil
}

// validRegistrationID applies DPS's rules: letters, digits and - . _ : only, ending in a
// letter, digit or '-'.
func validRegistrationID(s string) bool {
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

// CertFingerprint returns the fingerprint an x509 credential pins: the lowercase hex
// SHA-256 of the certificate's DER encoding.
func CertFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ValidFingerprint reports whether s has the form CertFingerprint returns.
func ValidFingerprint(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ParsePublicKey parses a PEM public key and checks it fits the credential type: a P-256
// ECDSA key for es256, an Ed25519 key for eddsa.
func ParsePublicKey(t store.CredentialType, pemText string) (any, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKIX public key")
	}
	switch t {
	case store.CredES256:
		if k, ok := key.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
			return k, nil
		}
		return nil, errors.New("es256 needs an ECDSA P-256 public key")
	case store.CredEdDSA:
		if k, ok := key.(ed25519.PublicKey); ok {
			return k, nil
		}
		return nil, errors.New("eddsa needs an Ed25519 public key")
	}
	return nil, fmt.Errorf("credential type %q has no public key", t)
}

// DevicePatch is a partial update; nil fields are left as they are.
type DevicePatch struct {
	Disabled *bool
	// MaxTTL of zero removes the device's cap.
	MaxTTL *time.Duration
}

// UpdateDevice applies p atomically.
func (r *Registry) UpdateDevice(ctx context.Context, id string, p DevicePatch) (store.Device, error) {
	if p.MaxTTL != nil && *p.MaxTTL != 0 && *p.MaxTTL < time.Minute {
		return store.Device{}, invalid("maxTtlSeconds must be 0 or at least 60")
	}
	d, err := r.store.UpdateDevice(ctx, id, func(d *store.Device) error {
		if p.Disabled != nil {
			d.Disabled = *p.Disabled
		}
		if p.MaxTTL != nil {
			d.MaxTTL = *p.MaxTTL
		}
		d.UpdatedAt = r.now().UTC()
		return nil
	})
	if err != nil {
		return store.Device{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return d, nil
}

// ErrNotSupported means the operation cannot be applied to this device as it is
// configured; the message says why and is safe to show the caller.
var ErrNotSupported = errors.New("not supported")

// Rotated is a device's or module's key pair after a rotation.
type Rotated struct {
	DeviceID, ModuleID string
	// PrimaryKey is the former secondary key; SecondaryKey is new and shown only once.
	PrimaryKey, SecondaryKey string
}

// RotateKeys makes the secondary key of the device (or of its module moduleID) the
// primary and generates a new secondary, atomically. IoT Hub already accepts the old
// secondary, so tokens signed with the new primary work before the hub is updated.
// Hubs that sign with a policy or group key have no device keys (ErrNotSupported), and
// neither can Transit keys be rotated here (ErrNotSupported).
func (r *Registry) RotateKeys(ctx context.Context, id, moduleID string) (Rotated, error) {
	if moduleID != "" && !signer.ValidID(moduleID) {
		return Rotated{}, invalid("module is not a valid module ID")
	}
	cur, err := r.store.GetDevice(ctx, id)
	if err != nil {
		return Rotated{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	hub, err := r.store.GetHub(ctx, cur.Hub)
	if err != nil {
		return Rotated{}, store.Describe(fmt.Sprintf("hub %q", cur.Hub), err)
	}
	if hub.Mode != store.SignDeviceKey {
		return Rotated{}, fmt.Errorf("%w: hub %q signs with its %s; its devices have no keys to rotate", ErrNotSupported, hub.Name, hub.Mode)
	}
	if hub.Transit {
		return Rotated{}, fmt.Errorf("%w: hub %q keeps keys in Vault Transit, where tokensvc does not rotate them yet; delete and re-create the device", ErrNotSupported, hub.Name)
	}
	out := Rotated{DeviceID: id, ModuleID: moduleID}
	errNoModule := store.Describe(fmt.Sprintf("module %q of device %q", moduleID, id), store.ErrNotFound)
	_, err = r.store.UpdateDevice(ctx, id, func(d *store.Device) error {
		if d.Hub != hub.Name {
			return fmt.Errorf("%w: device %q moved to another hub meanwhile", store.ErrConflict, id)
		}
		primary, secondary := &d.PrimaryKey, &d.SecondaryKey
		if moduleID != "" {
			i := slices.IndexFunc(d.Modules, func(m store.Module) bool { return m.ID == moduleID })
			if i < 0 {
				return errNoModule
			}
			primary, secondary = &d.Modules[i].PrimaryKey, &d.Modules[i].SecondaryKey
		}
		*primary, *secondary = *secondary, NewKey()
		out.PrimaryKey, out.SecondaryKey = *primary, *secondary
		d.UpdatedAt = r.now().UTC()
		return nil
	})
	switch {
	case errors.Is(err, errNoModule):
		return Rotated{}, errNoModule
	case err != nil:
		return Rotated{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return out, nil
}

// Revoke sets the device's revocation time to now: assertions issued before it, and
// nonces handed out before it, are refused from then on.
func (r *Registry) Revoke(ctx context.Context, id string) (store.Device, error) {
	d, err := r.store.UpdateDevice(ctx, id, func(d *store.Device) error {
		now := r.now().UTC()
		d.RevokedAt, d.UpdatedAt = now, now
		return nil
	})
	if err != nil {
		return store.Device{}, store.Describe(fmt.Sprintf("device %q", id), err)
	}
	return d, nil
}
