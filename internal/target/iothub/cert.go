package iothub

import (
	"fmt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// CertificateProfile implements target.CertificateKind for an X.509 CA-authenticated
// device: CN = the device ID ("{deviceId}/{moduleId}" for a module), MQTT with the
// usual user name and no password, AMQP with SASL ANONYMOUS (the TLS client
// certificate authenticates; no CBS token), HTTPS without an Authorization header.
func (Kind) CertificateProfile(h domain.Hub, d domain.Device, moduleID string) (target.CertificateProfile, error) {
	cn := d.ID
	if moduleID != "" {
		if _, ok := d.Module(moduleID); !ok {
			return target.CertificateProfile{}, fmt.Errorf("module %q of device %q: %w", moduleID, d.ID, target.ErrForbidden)
		}
		cn += "/" + moduleID
	}
	var cs target.CertificateSettings
	if err := target.DecodeSettings(h, &cs); err != nil {
		return target.CertificateProfile{}, fmt.Errorf("iothub hub %q: stored settings: %v", h.Name, err)
	}
	id := signer.Identity{Host: h.Hostname, DeviceID: d.ID, ModuleID: moduleID, GatewayHostName: h.GatewayHostName}
	p := signer.IoTHubProfiles(id, "", signer.TCP)
	p.MQTT.Password = ""
	p.AMQP.Username, p.AMQP.Password, p.AMQP.CBSAudience = "", "", ""
	p.AMQP.URL = "amqps://" + p.AMQP.Host + ":5671"
	p.HTTPS.Authorization = ""
	p.ConnectionString = "HostName=" + h.Hostname + ";DeviceId=" + d.ID
	if moduleID != "" {
		p.ConnectionString += ";ModuleId=" + moduleID
	}
	p.ConnectionString += ";x509=true"
	if h.GatewayHostName != "" {
		p.ConnectionString += ";GatewayHostName=" + h.GatewayHostName
	}
	return target.CertificateProfile{
		CommonName:    cn,
		Settings:      cs,
		Profiles:      p,
		TLSServerName: target.ServerName(h),
		CACert:        h.CACert,
	}, nil
}
