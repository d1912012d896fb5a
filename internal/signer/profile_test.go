package signer_test

import (
	"reflect"
	"testing"

	"github.com/tokensvc/tokensvc/internal/signer"
)

func TestIoTHubProfiles(t *testing.T) {
	const tok = "SharedAccessSignature sr=x&sig=a%2Bb%3D&se=1"
	const encTok = "SharedAccessSignature%20sr%3Dx%26sig%3Da%252Bb%253D%26se%3D1"
	tests := []struct {
		name      string
		id        signer.Identity
		transport signer.Transport
		want      signer.Profiles
	}{
		{
			name:      "device over tcp",
			id:        signer.Identity{Host: "contoso.azure-devices.net", DeviceID: "dev-1"},
			transport: signer.TCP,
			want: signer.Profiles{
				MQTT: &signer.MQTT{
					Host: "contoso.azure-devices.net", Port: 8883, Transport: "tcp",
					URL:      "mqtts://contoso.azure-devices.net:8883",
					ClientID: "dev-1", Username: "contoso.azure-devices.net/dev-1/?api-version=2021-04-12", Password: tok,
					Topics: signer.MQTTTopics{
						Publish:     "devices/dev-1/messages/events/",
						Subscribe:   []string{"devices/dev-1/messages/devicebound/#"},
						TwinRequest: "$iothub/twin/res/#", TwinPatch: "$iothub/twin/PATCH/properties/desired/#", Methods: "$iothub/methods/POST/#",
					},
				},
				AMQP: &signer.AMQP{
					Host: "contoso.azure-devices.net", Port: 5671, Transport: "tcp",
					URL:      "amqps://dev-1%40sas.contoso:" + encTok + "@contoso.azure-devices.net/devices/dev-1/messages/events",
					Username: "dev-1@sas.contoso", Password: tok,
					Address: "/devices/dev-1/messages/events", CBSAudience: "contoso.azure-devices.net/devices/dev-1",
				},
				HTTPS: &signer.HTTPS{
					URL:           "https://contoso.azure-devices.net/devices/dev-1/messages/events?api-version=2021-04-12",
					Authorization: tok,
				},
				ConnectionString: "HostName=contoso.azure-devices.net;DeviceId=dev-1;SharedAccessSignature=" + tok,
			},
		},
		{
			name:      "module over websocket on the device endpoint",
			id:        signer.Identity{Host: "contoso.device.azure-devices.net", DeviceID: "gw", ModuleID: "filter"},
			transport: signer.WebSocket,
			want: signer.Profiles{
				MQTT: &signer.MQTT{
					Host: "contoso.device.azure-devices.net", Port: 443, Transport: "ws",
					URL:      "wss://contoso.device.azure-devices.net:443/$iothub/websocket",
					ClientID: "gw/filter", Username: "contoso.device.azure-devices.net/gw/filter/?api-version=2021-04-12", Password: tok,
					Topics: signer.MQTTTopics{
						Publish:     "devices/gw/modules/filter/messages/events/",
						Subscribe:   []string{},
						TwinRequest: "$iothub/twin/res/#", TwinPatch: "$iothub/twin/PATCH/properties/desired/#", Methods: "$iothub/methods/POST/#",
					},
				},
				AMQP: &signer.AMQP{
					Host: "contoso.device.azure-devices.net", Port: 443, Transport: "ws",
					URL:      "wss://contoso.device.azure-devices.net:443/$iothub/websocket",
					Username: "gw/modules/filter@sas.contoso", Password: tok,
					Address: "/devices/gw/modules/filter/messages/events", Subprotocol: "AMQPWSB10",
					CBSAudience: "contoso.device.azure-devices.net/devices/gw/modules/filter",
				},
				HTTPS: &signer.HTTPS{
					URL:           "https://contoso.device.azure-devices.net/devices/gw/modules/filter/messages/events?api-version=2021-04-12",
					Authorization: tok,
				},
				ConnectionString: "HostName=contoso.device.azure-devices.net;DeviceId=gw;ModuleId=filter;SharedAccessSignature=" + tok,
			},
		},
		{
			name:      "device through an IoT Edge gateway with special characters in its ID",
			id:        signer.Identity{Host: "contoso.azure-devices.net", DeviceID: "leaf:1@a", GatewayHostName: "edge.factory.local"},
			transport: signer.TCP,
			want: signer.Profiles{
				MQTT: &signer.MQTT{
					Host: "edge.factory.local", Port: 8883, Transport: "tcp",
					URL:      "mqtts://edge.factory.local:8883",
					ClientID: "leaf:1@a", Username: "contoso.azure-devices.net/leaf:1@a/?api-version=2021-04-12", Password: tok,
					Topics: signer.MQTTTopics{
						Publish:     "devices/leaf:1@a/messages/events/",
						Subscribe:   []string{"devices/leaf:1@a/messages/devicebound/#"},
						TwinRequest: "$iothub/twin/res/#", TwinPatch: "$iothub/twin/PATCH/properties/desired/#", Methods: "$iothub/methods/POST/#",
					},
				},
				AMQP: &signer.AMQP{
					Host: "edge.factory.local", Port: 5671, Transport: "tcp",
					URL:      "amqps://leaf%3A1%40a%40sas.contoso:" + encTok + "@edge.factory.local/devices/leaf%3A1%40a/messages/events",
					Username: "leaf:1@a@sas.contoso", Password: tok,
					Address: "/devices/leaf:1@a/messages/events", CBSAudience: "contoso.azure-devices.net/devices/leaf:1@a",
				},
				HTTPS: &signer.HTTPS{
					URL:           "https://edge.factory.local/devices/leaf%3A1%40a/messages/events?api-version=2021-04-12",
					Authorization: tok,
				},
				ConnectionString: "HostName=contoso.azure-devices.net;DeviceId=leaf:1@a;SharedAccessSignature=" + tok + ";GatewayHostName=edge.factory.local",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := signer.IoTHubProfiles(tt.id, tok, tt.transport)
			if !reflect.DeepEqual(got.MQTT, tt.want.MQTT) {
				t.Errorf("mqtt:\n got %+v\nwant %+v", got.MQTT, tt.want.MQTT)
			}
			if !reflect.DeepEqual(got.AMQP, tt.want.AMQP) {
				t.Errorf("amqp:\n got %+v\nwant %+v", got.AMQP, tt.want.AMQP)
			}
			if !reflect.DeepEqual(got.HTTPS, tt.want.HTTPS) {
				t.Errorf("https:\n got %+v\nwant %+v", got.HTTPS, tt.want.HTTPS)
			}
			if got.ConnectionString != tt.want.ConnectionString {
				t.Errorf("connection string:\n got %s\nwant %s", got.ConnectionString, tt.want.ConnectionString)
			}
		})
	}
}

func TestEventHubsProfiles(t *testing.T) {
	const tok = "SharedAccessSignature sr=x&sig=y&se=1&skn=Send"
	got := signer.EventHubsProfiles("contoso-ns.servicebus.windows.net", "telemetry", "dev-1", tok, signer.TCP)
	if got.MQTT != nil {
		t.Errorf("mqtt: got %+v, want nil (Event Hubs speaks no MQTT)", got.MQTT)
	}
	wantAMQP := &signer.AMQP{
		Host: "contoso-ns.servicebus.windows.net", Port: 5671, Transport: "tcp",
		URL:         "amqps://contoso-ns.servicebus.windows.net/telemetry/publishers/dev-1",
		Address:     "/telemetry/publishers/dev-1",
		CBSAudience: "https://contoso-ns.servicebus.windows.net/telemetry/publishers/dev-1",
	}
	if !reflect.DeepEqual(got.AMQP, wantAMQP) {
		t.Errorf("amqp:\n got %+v\nwant %+v", got.AMQP, wantAMQP)
	}
	if want := "https://contoso-ns.servicebus.windows.net/telemetry/publishers/dev-1/messages"; got.HTTPS.URL != want {
		t.Errorf("https url: got %s, want %s", got.HTTPS.URL, want)
	}
	if got.ConnectionString != "" {
		t.Errorf("connection string: got %q, want none (a publisher token does not cover the entity SDKs send to)", got.ConnectionString)
	}
}

func TestDPSProfiles(t *testing.T) {
	const tok = "SharedAccessSignature sr=x&sig=y&se=1&skn=registration"
	got := signer.DPSProfiles("global.azure-devices-provisioning.net", "0ne00ABCDEF", "sensor-3", tok, signer.TCP)
	want := &signer.MQTT{
		Host: "global.azure-devices-provisioning.net", Port: 8883, Transport: "tcp",
		URL:      "mqtts://global.azure-devices-provisioning.net:8883",
		ClientID: "sensor-3", Username: "0ne00ABCDEF/registrations/sensor-3/api-version=2021-06-01", Password: tok,
		Topics: signer.MQTTTopics{
			Publish:   "$dps/registrations/PUT/iotdps-register/?$rid=1",
			Subscribe: []string{"$dps/registrations/res/#"},
		},
	}
	if !reflect.DeepEqual(got.MQTT, want) {
		t.Errorf("mqtt:\n got %+v\nwant %+v", got.MQTT, want)
	}
	if wantURL := "https://global.azure-devices-provisioning.net/0ne00ABCDEF/registrations/sensor-3/register?api-version=2021-06-01"; got.HTTPS.URL != wantURL {
		t.Errorf("https url: got %s, want %s", got.HTTPS.URL, wantURL)
	}
	if got.AMQP != nil || got.ConnectionString != "" {
		t.Errorf("got amqp %+v and connection string %q, want none for DPS", got.AMQP, got.ConnectionString)
	}
}
