package tmpl

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"

	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// Certificate is a device certificate as templates see it ({{ .Certificate.Chain }}).
// The private key is never in the view: software reads the agent's key file, whose
// path KeyFile gives.
type Certificate struct {
	// PEM is the device certificate alone; Chain the certificate followed by its CA
	// chain, what a TLS client presents (Python's load_cert_chain, mosquitto's
	// certfile); CA the CA chain to the hub's CA alone (issuing CA first).
	PEM   string `json:"pem"`
	Chain string `json:"chain"`
	CA    string `json:"ca"`
	// Serial is the certificate's serial number (hex); KeyFile the private key's path.
	Serial  string `json:"serial"`
	KeyFile string `json:"keyFile"`
}

// ViewOf is the View of t: NewView of its response and, for a device certificate, the
// certificate.
func ViewOf(t token.Token) View {
	v := NewView(t.Response)
	if c := t.Certificate; c != nil {
		chain := c.PEM
		if !strings.HasSuffix(chain, "\n") {
			chain += "\n"
		}
		v.Certificate = &Certificate{PEM: c.PEM, Chain: chain + c.Chain, CA: c.Chain, Serial: c.Serial, KeyFile: c.KeyFile}
	}
	return v
}

// RenderToken executes t over ViewOf(tok). Errors never include the rendered text.
func RenderToken(t *template.Template, tok token.Token) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, ViewOf(tok)); err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name(), err)
	}
	return b.Bytes(), nil
}
