package certificate

import (
	"path/filepath"

	"github.com/tokensvc/tokensvc/internal/agent/filesink"
	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
)

// The stable names of the files in a certificate directory (Files, and KeyFileIn).
const (
	// ChainFile is the certificate followed by its CA chain (PEM): what a TLS client
	// loads as its certificate (Python ssl's load_cert_chain certfile).
	ChainFile = "device.crt"
	// KeyFileName is the device's private key (PEM PKCS#8, 0600), written once by the
	// agent itself, never by a template.
	KeyFileName = "device.key"
	// CAFile is the CA chain to the hub's CA (PEM), issuing CA first.
	CAFile = "ca.crt"
	// MQTTFile is the mqtt profile, as the API returns it (JSON): host, port, alpn,
	// clientId, topics, tls.serverName.
	MQTTFile = "mqtt.json"
)

// KeyFileIn is the key file's path in a certificate directory.
func KeyFileIn(dir string) string { return filepath.Join(dir, KeyFileName) }

// Files are the file sink's entries that keep dir's ChainFile, CAFile and MQTTFile up
// to date with every new certificate (mode 0644: none holds a secret).
func Files(dir string) ([]filesink.File, error) {
	var out []filesink.File
	for _, f := range []struct{ name, text string }{
		{ChainFile, "{{ .Certificate.Chain }}"},
		{CAFile, "{{ .Certificate.CA }}"},
		{MQTTFile, "{{ json .Mqtt }}\n"},
	} {
		t, err := tmpl.Parse(f.name, f.text)
		if err != nil {
			return nil, err
		}
		out = append(out, filesink.File{Template: t, Path: filepath.Join(dir, f.name), Mode: 0o644})
	}
	return out, nil
}
