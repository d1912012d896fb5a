// Package tlsconf builds the TLS settings the agent uses towards a broker: the operator's
// trust (a CA bundle, or the system roots) plus the CA the token service hands out for
// the hub or its IoT Edge gateway, the server name the token's profile names, and the
// ALPN protocols it lists (AWS IoT Core takes MQTT on port 443 only with ALPN).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// LoadPool reads a PEM CA bundle; an empty path means the system roots.
func LoadPool(path string) (*x509.CertPool, error) {
	if path == "" {
		p, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("system roots: %w", err)
		}
		return p, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA bundle %s: no PEM certificate found", path)
	}
	return p, nil
}

// ForBroker returns a client TLS config that trusts base (nil: the system roots) and the
// profile's caCert PEM (an IoT Edge root CA, say), verifying serverName.
func ForBroker(base *x509.CertPool, caCertPEM, serverName string) (*tls.Config, error) {
	var roots *x509.CertPool
	switch {
	case base != nil:
		roots = base.Clone()
	default:
		p, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("system roots: %w", err)
		}
		roots = p
	}
	if caCertPEM != "" && !roots.AppendCertsFromPEM([]byte(caCertPEM)) {
		return nil, errors.New("the token's caCert holds no usable certificate")
	}
	if serverName == "" {
		return nil, errors.New("no TLS server name")
	}
	return &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}

// ForProfile is ForBroker for a token profile's TLS settings: their server name and
// caCert, or host and no extra CA when s is nil.
func ForProfile(base *x509.CertPool, s *oapi.TlsSettings, host string) (*tls.Config, error) {
	if s == nil {
		return ForBroker(base, "", host)
	}
	ca := ""
	if s.CaCert != nil {
		ca = *s.CaCert
	}
	return ForBroker(base, ca, s.ServerName)
}

// ForMQTT is ForProfile for an MQTT profile, offering the ALPN protocols it lists (AWS
// IoT Core on port 443: "mqtt" with a custom authorizer).
func ForMQTT(base *x509.CertPool, p *oapi.MqttProfile) (*tls.Config, error) {
	c, err := ForProfile(base, p.Tls, p.Host)
	if err != nil {
		return nil, err
	}
	if p.Alpn != nil && len(*p.Alpn) > 0 {
		c.NextProtos = append([]string(nil), *p.Alpn...)
	}
	return c, nil
}
