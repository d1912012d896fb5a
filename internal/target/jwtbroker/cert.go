package jwtbroker

import (
	"fmt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Mode certificate: a generic mutual-TLS MQTT broker or an Azure Event Grid namespace
// authenticates the device by its client certificate (Event Grid: CA-signed
// certificate, client authentication name from the subject CN, which is the device
// ID). The MQTT settings (port, version, client ID, user name, topics) are the kind's
// own; the JWT ones (audience, algorithm, authMethod, claims) do not apply.

// normalizeCertificate checks and writes back the settings of a hub in mode
// certificate.
func normalizeCertificate(h *domain.Hub, s Settings) error {
	if s.Audience != "" || s.Algorithm != "" || s.AuthMethod != "" || len(s.Claims) > 0 {
		return domain.Invalid("audience, algorithm, authMethod and claims apply to mode jwt, not certificate")
	}
	if err := s.normalize(h.Hostname); err != nil {
		return err
	}
	s.Audience, s.Algorithm = "", "" // JWT defaults normalize filled in
	return target.EncodeSettings(h, &s)
}

// CertificateProfile implements target.CertificateKind: CN = the device ID, MQTT over
// TLS with the hub's client ID, user name and topics, and no password.
func (Kind) CertificateProfile(h domain.Hub, d domain.Device, moduleID string) (target.CertificateProfile, error) {
	if err := target.NoModuleCredential(target.Request{Device: d, ModuleID: moduleID}); err != nil {
		return target.CertificateProfile{}, err
	}
	set, err := decode(h)
	if err != nil {
		return target.CertificateProfile{}, fmt.Errorf("hub %q: stored settings: %v", h.Name, err)
	}
	p := target.CertificateProfile{
		CommonName:    d.ID,
		Settings:      set.CertificateSettings,
		TLSServerName: h.Hostname,
		CACert:        h.CACert,
	}
	p.Profiles.MQTT = profile(set, h.Hostname, d.ID, "")
	return p, nil
}
