package awsiot

import (
	"fmt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
)

// Mode certificate: AWS IoT Core authenticates the device by its X.509 client
// certificate, signed by a CA registered with the account. MQTT on 8883 needs nothing
// more; on 443 the TLS handshake must offer ALPN ALPNMQTTCert, and HTTPS on 443 must
// offer ALPNHTTPCert (8443 needs none). The profiles name the 443 variants, which get
// through firewalls that only let HTTPS out; a device that prefers 8883 drops the ALPN.
const (
	ALPNMQTTCert = "x-amzn-mqtt-ca"
	ALPNHTTPCert = "x-amzn-http-ca"
	// PortMQTTCert and PortHTTPSCert are AWS IoT Core's ports for certificate
	// authentication without ALPN.
	PortMQTTCert  = 8883
	PortHTTPSCert = 8443
)

// CertificateProfile implements target.CertificateKind: CN = the device ID (its MQTT
// client ID, and the thing name AWS IoT policies read), MQTT and HTTPS on 443 with the
// certificate ALPN protocols, no user name or password.
func (Kind) CertificateProfile(h domain.Hub, d domain.Device, moduleID string) (target.CertificateProfile, error) {
	if err := target.NoModuleCredential(target.Request{Device: d, ModuleID: moduleID}); err != nil {
		return target.CertificateProfile{}, err
	}
	set, err := settingsOf(h)
	if err != nil {
		return target.CertificateProfile{}, fmt.Errorf("awsiot hub %q: stored settings: %v", h.Name, err)
	}
	id := d.ID
	topic := Topic(set.TopicTemplate, id)
	subs := make([]string, len(set.SubscribeTemplates))
	for i, f := range set.SubscribeTemplates {
		subs[i] = Topic(f, id)
	}
	return target.CertificateProfile{
		CommonName: id,
		Settings:   set.CertificateSettings,
		Profiles: signer.Profiles{
			MQTT: &signer.MQTT{
				Host: h.Hostname, Port: Port, Transport: signer.TCP,
				URL:             "mqtts://" + h.Hostname + ":443",
				ClientID:        id,
				ProtocolVersion: "3.1.1",
				ALPN:            []string{ALPNMQTTCert},
				Topics:          signer.MQTTTopics{Publish: topic, Subscribe: subs},
			},
			HTTPS: &signer.HTTPS{
				URL:  "https://" + h.Hostname + ":443/topics/" + escapeTopic(topic) + "?qos=1",
				ALPN: []string{ALPNHTTPCert},
			},
		},
		TLSServerName: h.Hostname,
		CACert:        h.CACert,
	}, nil
}
