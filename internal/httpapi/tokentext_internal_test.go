package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestTokenTextJWTBroker: the compact form tells an MQTT 5 device with enhanced
// authentication everything the JSON profile does — the version, the method, the ALPN
// — and an empty password, because the token travels as authentication data.
func TestTokenTextJWTBroker(t *testing.T) {
	at := time.Unix(1_800_000_000, 0).UTC()
	body := oapi.TokenResponse{
		Token: "eyJ.a.b", Resource: "ns.westeurope-1.ts.eventgrid.azure.net/", Hub: "eg", Kind: "jwtbroker",
		ServerTime: at, ExpiresAt: at.Add(time.Hour), RefreshAfter: at.Add(48 * time.Minute), ExpiresIn: 3600,
		Mqtt: &oapi.MqttProfile{Host: "ns.westeurope-1.ts.eventgrid.azure.net", Port: 8883, Transport: "tcp",
			Url: "mqtts://ns.westeurope-1.ts.eventgrid.azure.net:8883", ClientId: "pump-7", Username: "pump-7",
			ProtocolVersion: "5", AuthMethod: ptrIfSet("CUSTOM-JWT"), Alpn: &[]string{"mqtt"},
			Topics: oapi.MqttTopics{Publish: "devices/pump-7/telemetry"}},
	}
	rec := httptest.NewRecorder()
	if err := (tokenText{body}).VisitGetTokenResponse(rec); err != nil {
		t.Fatal(err)
	}
	got := rec.Body.String()
	for _, want := range []string{"token=eyJ.a.b\n", "mqttVersion=5\n", "mqttAuthMethod=CUSTOM-JWT\n", "mqttAlpn=mqtt\n", "mqttClientId=pump-7\n", "mqttPassword=\n", "refreshIn=2880\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("text form lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "mqttPassword=eyJ") {
		t.Errorf("text form puts the token in the password for enhanced authentication:\n%s", got)
	}
}
