package target

import (
	"slices"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// Mode certificate: a hub's devices get short-lived X.509 client certificates signed by
// the hub's CA (package devicecert) instead of tokens. The certificate rules that do not
// depend on the kind (CSR checks, lifetime, key usage) live in devicecert; a kind that
// offers the mode implements CertificateKind and embeds CertificateSettings in its
// settings struct.

// CertificateKind is implemented by kinds whose hubs may run in mode certificate.
type CertificateKind interface {
	// CertificateProfile returns what device d's certificate (or its module moduleID's)
	// on hub h says and the settings to connect with it. It returns an error wrapping
	// ErrForbidden for a module the device may not have.
	CertificateProfile(h domain.Hub, d domain.Device, moduleID string) (CertificateProfile, error)
}

// CertificateProfile is a kind's part of a device certificate.
type CertificateProfile struct {
	// CommonName is the certificate's subject CN: the identity the broker reads.
	CommonName string
	// Settings are the hub's certificate settings, defaults filled in.
	Settings CertificateSettings
	// Profiles are the connection settings; they carry no secret (the key stays on
	// the device).
	Profiles signer.Profiles
	// TLSServerName and CACert tell the device what to trust.
	TLSServerName string
	CACert        string
}

// Key types a device key in a CSR may have, as the API spells them.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyRSA2048   = "rsa-2048"
	KeyRSA3072   = "rsa-3072"
	KeyRSA4096   = "rsa-4096"
)

// CertificateKeyTypes are all the key types, the default allow-list.
var CertificateKeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA3072, KeyRSA4096}

// Certificate lifetimes: the default and bounds of a hub's settings.
const (
	DefaultCertificateTTL = 24 * time.Hour
	MinCertificateTTL     = 5 * time.Minute
	MaxCertificateTTL     = 365 * 24 * time.Hour
)

// CertificateSettings are the hub fields every kind in mode certificate shares (json
// tags = API names). A kind embeds it in its settings struct without a json name, so
// DecodeSettings reads these fields as the kind's own.
type CertificateSettings struct {
	TTLSeconds    int      `json:"certificateTtlSeconds,omitempty"`
	MaxTTLSeconds int      `json:"certificateMaxTtlSeconds,omitempty"`
	KeyTypes      []string `json:"certificateKeyTypes,omitempty"`
	// PKIRole is the Vault PKI role that signs (store vault); "" for the service's
	// default role.
	PKIRole string `json:"pkiRole,omitempty"`
}

// IsZero says no certificate setting is set.
func (c CertificateSettings) IsZero() bool {
	return c.TTLSeconds == 0 && c.MaxTTLSeconds == 0 && len(c.KeyTypes) == 0 && c.PKIRole == ""
}

// Normalize checks c for a hub in mode (refusing any certificate field outside mode
// certificate) and fills its defaults; errors wrap domain.ErrInvalid and name the field.
func (c *CertificateSettings) Normalize(mode domain.SigningMode) error {
	if mode != domain.SignCertificate {
		if !c.IsZero() {
			return domain.Invalid("certificateTtlSeconds, certificateMaxTtlSeconds, certificateKeyTypes and pkiRole apply only to mode certificate, not %s", mode)
		}
		return nil
	}
	minS, maxS := int(MinCertificateTTL/time.Second), int(MaxCertificateTTL/time.Second)
	if c.MaxTTLSeconds == 0 {
		c.MaxTTLSeconds = max(int(DefaultCertificateTTL/time.Second), c.TTLSeconds)
	}
	if c.TTLSeconds == 0 {
		c.TTLSeconds = min(int(DefaultCertificateTTL/time.Second), c.MaxTTLSeconds)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"certificateTtlSeconds", c.TTLSeconds}, {"certificateMaxTtlSeconds", c.MaxTTLSeconds}} {
		if f.v < minS || f.v > maxS {
			return domain.Invalid("%s: must be %d to %d, not %d", f.name, minS, maxS, f.v)
		}
	}
	if c.TTLSeconds > c.MaxTTLSeconds {
		return domain.Invalid("certificateTtlSeconds: %d is above certificateMaxTtlSeconds %d", c.TTLSeconds, c.MaxTTLSeconds)
	}
	if len(c.KeyTypes) == 0 {
		c.KeyTypes = slices.Clone(CertificateKeyTypes)
	}
	for i, k := range c.KeyTypes {
		if !slices.Contains(CertificateKeyTypes, k) {
			return domain.Invalid("certificateKeyTypes: %q is not one of %s", k, strings.Join(CertificateKeyTypes, ", "))
		}
		if slices.Contains(c.KeyTypes[:i], k) {
			return domain.Invalid("certificateKeyTypes: %q listed twice", k)
		}
	}
	if len(c.PKIRole) > 128 || strings.Trim(c.PKIRole, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return domain.Invalid("pkiRole: 1 to 128 letters, digits, '.', '_' or '-'")
	}
	return nil
}

// CertificateSettingsOf reads the shared certificate fields of h (as a kind stored
// them, defaults filled in), ignoring the kind's own fields.
func CertificateSettingsOf(h domain.Hub) (CertificateSettings, error) {
	var c CertificateSettings
	shared := domain.Hub{Kind: h.Kind, Settings: map[string]string{}}
	for _, name := range settingNames(&c) {
		if text, ok := h.Settings[name]; ok {
			shared.Settings[name] = text
		}
	}
	if err := DecodeSettings(shared, &c); err != nil {
		return CertificateSettings{}, err
	}
	return c, nil
}

// Lifetime is the certificate lifetime for a request of requested (0: the hub's
// default), capped by the hub's maximum.
func (c CertificateSettings) Lifetime(requested time.Duration) time.Duration {
	if requested <= 0 {
		requested = time.Duration(c.TTLSeconds) * time.Second
	}
	return min(requested, time.Duration(c.MaxTTLSeconds)*time.Second)
}

// NoTokens refuses a token on a hub whose devices get certificates instead; the error
// wraps domain.ErrInvalid and tells the device where to ask.
func NoTokens(h domain.Hub) error {
	if h.Mode == domain.SignCertificate {
		return domain.Invalid("hub %q issues device certificates, not tokens: POST /token/certificate", h.Name)
	}
	return nil
}
