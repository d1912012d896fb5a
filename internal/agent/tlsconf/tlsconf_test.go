package tlsconf_test

import (
	"slices"
	"testing"

	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

func TestForMQTT(t *testing.T) {
	ca := testca.NewCA(t, "tlsconf test CA")
	alpn := []string{"mqtt"}
	tests := []struct {
		name string
		p    oapi.MqttProfile
		want []string
	}{
		{"AWS IoT Core custom auth on 443", oapi.MqttProfile{Host: "a-ats.iot.eu-west-1.amazonaws.com", Alpn: &alpn}, []string{"mqtt"}},
		{"no ALPN", oapi.MqttProfile{Host: "hub.azure-devices.net"}, nil},
		{"server name from the profile's TLS settings", oapi.MqttProfile{Host: "gw", Tls: &oapi.TlsSettings{ServerName: "edge"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tlsconf.ForMQTT(testca.Pool(ca), &tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.NextProtos, tt.want) {
				t.Errorf("NextProtos: got %v, want %v", c.NextProtos, tt.want)
			}
			want := tt.p.Host
			if tt.p.Tls != nil {
				want = tt.p.Tls.ServerName
			}
			if c.ServerName != want {
				t.Errorf("ServerName: got %q, want %q", c.ServerName, want)
			}
		})
	}
	// The profile's list is copied, not shared with the config.
	p := oapi.MqttProfile{Host: "h", Alpn: &alpn}
	c, _ := tlsconf.ForMQTT(nil, &p)
	c.NextProtos[0] = "x"
	if alpn[0] != "mqtt" {
		t.Error("the config shares the profile's ALPN list")
	}
}
