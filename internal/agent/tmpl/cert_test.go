package tmpl_test

import (
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

func TestRenderCertificate(t *testing.T) {
	const leaf, chain = "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
	tok := token.Token{Response: oapi.TokenResponse{Hub: "aws", Kind: oapi.Awsiot},
		Certificate: &token.Certificate{PEM: leaf, Chain: chain, Serial: "1f", KeyFile: "/var/lib/tokenagent/device.key"}}
	tests := []struct {
		name, text, want string
	}{
		{"chain", "{{ .Certificate.Chain }}", leaf + "\n" + chain},
		{"leaf", "{{ .Certificate.PEM }}", leaf},
		{"CA", "{{ .Certificate.CA }}", chain},
		{"serial and key file", "{{ .Certificate.Serial }} {{ .Certificate.KeyFile }}", "1f /var/lib/tokenagent/device.key"},
		{"json", "{{ json .Certificate.Serial }}", `"1f"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := tmpl.Parse(tc.name, tc.text)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.RenderToken(tp, tok)
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// A token has no certificate: naming one is an error, not empty output.
	tp, _ := tmpl.Parse("t", "{{ .Certificate.Chain }}")
	if _, err := tmpl.RenderToken(tp, token.Token{Response: oapi.TokenResponse{Token: "x"}}); err == nil || !strings.Contains(err.Error(), "template t") {
		t.Fatalf("got %v, want a template error", err)
	}
}
