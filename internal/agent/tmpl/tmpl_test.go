package tmpl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

func ptr(s string) *string { return &s }

// response is a GET /token answer with every profile, as the generated client decodes it.
func response() oapi.TokenResponse {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := oapi.TokenResponse{
		Token: "SharedAccessSignature sr=h%2Fdevices%2Fd1&sig=x&se=1", ConnectionString: ptr("HostName=h;DeviceId=d1;SharedAccessSignature=SharedAccessSignature sr=…"),
		Hub: "h.azure-devices.net", Kind: "iothub", Resource: "h.azure-devices.net/devices/d1",
		ServerTime: at, ExpiresAt: at.Add(time.Hour), RefreshAfter: at.Add(48 * time.Minute), ExpiresIn: 3600,
		Mqtt: &oapi.MqttProfile{Host: "h.azure-devices.net", Port: 8883, Url: "mqtts://h.azure-devices.net:8883", Transport: "tcp",
			ProtocolVersion: "3.1.1", ClientId: "d1", Username: "h.azure-devices.net/d1/?api-version=2021-04-12", Password: "SAS",
			Topics: oapi.MqttTopics{Publish: "devices/d1/messages/events/", Subscribe: []string{"devices/d1/messages/devicebound/#"}},
			Tls:    &oapi.TlsSettings{ServerName: "edge.local", CaCert: ptr("PEM")}},
		Amqp: &oapi.AmqpProfile{Host: "h.azure-devices.net", Port: 5671, Url: "amqps://h.azure-devices.net:5671", Transport: "tcp",
			Address: "/devices/d1/messages/events", SaslMechanism: "PLAIN", Username: ptr("d1@sas.h"), Password: ptr("SAS")},
		Https: &oapi.HttpsProfile{Url: "https://h.azure-devices.net/devices/d1/messages/events?api-version=2021-04-12", Authorization: ptr("SAS")},
	}
	r.Amqp.Cbs.Node, r.Amqp.Cbs.Audience, r.Amqp.Cbs.TokenType = "$cbs", "h.azure-devices.net/devices/d1", "servicebus.windows.net:sastoken"
	return r
}

// TestRender renders templates in the View's names and in the generated names that
// templates used before View; both must give the same values.
func TestRender(t *testing.T) {
	full := response()
	bare := response()
	bare.ConnectionString, bare.Mqtt, bare.Amqp, bare.Https = nil, nil, nil, nil
	noPlain := response()
	noPlain.Amqp.Username, noPlain.Amqp.Password = nil, nil
	tests := []struct {
		name    string
		text    string
		r       oapi.TokenResponse
		want    string
		wantErr string
	}{
		// View names.
		{name: "token", text: "{{ .Token }}", r: full, want: full.Token},
		{name: "connection string", text: "{{ .ConnectionString }}", r: full, want: *full.ConnectionString},
		{name: "no connection string", text: "[{{ .ConnectionString }}]", r: bare, want: "[]"},
		{name: "times", text: "{{ unix .ExpiresAt }} {{ unix .RefreshAfter }} {{ .ExpiresIn }}", r: full, want: "1772370000 1772369280 3600"},
		{name: "hub", text: "{{ .Hub }} {{ .Kind }} {{ .Resource }}", r: full, want: "h.azure-devices.net iothub h.azure-devices.net/devices/d1"},
		{name: "mqtt", text: "{{ .MQTT.Host }}:{{ .MQTT.Port }} {{ .MQTT.ClientID }} {{ .MQTT.Username }} {{ .MQTT.Password }} {{ .MQTT.PublishTopic }} {{ index .MQTT.SubscribeTopics 0 }} {{ .MQTT.TLSServerName }} {{ .MQTT.CACert }}",
			r: full, want: "h.azure-devices.net:8883 d1 h.azure-devices.net/d1/?api-version=2021-04-12 SAS devices/d1/messages/events/ devices/d1/messages/devicebound/# edge.local PEM"},
		{name: "amqp", text: "{{ .AMQP.URL }} {{ .AMQP.Username }} {{ .AMQP.Password }} {{ .AMQP.Address }} {{ .AMQP.CBSNode }} {{ .AMQP.SASLMechanism }}",
			r: full, want: "amqps://h.azure-devices.net:5671 d1@sas.h SAS /devices/d1/messages/events $cbs PLAIN"},
		{name: "amqp without plain credentials", text: "[{{ .AMQP.Username }}]", r: noPlain, want: "[]"},
		{name: "https", text: "{{ .HTTPS.URL }} {{ .HTTPS.Authorization }}", r: full, want: full.Https.Url + " SAS"},
		{name: "json of a profile", text: "{{ json .HTTPS }}", r: full, want: `{"url":"` + full.Https.Url + `","authorization":"SAS"}`},
		{name: "absent profile tested", text: "{{ if .MQTT }}mqtt{{ else }}none{{ end }}", r: bare, want: "none"},
		{name: "absent profile used", text: "{{ .MQTT.Host }}", r: bare, wantErr: "nil pointer"},
		{name: "unknown field", text: "{{ .Password }}", r: full, wantErr: "can't evaluate field Password"},
		// Names from before View.
		{name: "old deref connection string", text: "{{ deref .ConnectionString }}", r: full, want: *full.ConnectionString},
		{name: "old deref absent connection string", text: "[{{ deref .ConnectionString }}]", r: bare, want: "[]"},
		{name: "old mqtt", text: "{{ .Mqtt.Username }} {{ .Mqtt.Password }} {{ .Mqtt.ClientId }} {{ .Mqtt.Topics.Publish }} {{ .Mqtt.Url }}",
			r: full, want: "h.azure-devices.net/d1/?api-version=2021-04-12 SAS d1 devices/d1/messages/events/ mqtts://h.azure-devices.net:8883"},
		{name: "old amqp", text: "{{ deref .Amqp.Username }} {{ deref .Amqp.Password }} {{ .Amqp.Url }} {{ .Amqp.Cbs.Node }}",
			r: full, want: "d1@sas.h SAS amqps://h.azure-devices.net:5671 $cbs"},
		{name: "old amqp without plain credentials", text: "[{{ deref .Amqp.Username }}]", r: noPlain, want: "[]"},
		{name: "old https", text: "{{ .Https.Authorization }}", r: full, want: "SAS"},
		{name: "old json of a profile", text: "{{ json .Https }}", r: full, want: `{"authorization":"SAS","url":"` + full.Https.Url + `"}`},
		{name: "old expiry", text: "{{ unix .ExpiresAt }}", r: full, want: "1772370000"},
		{name: "deref of a number", text: "{{ deref .ExpiresIn }}", r: full, wantErr: "deref of int"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := tmpl.Parse(tt.name, tt.text)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.Render(tp, tt.r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want %q", err, tt.want)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
