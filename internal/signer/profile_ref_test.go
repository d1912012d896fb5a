package signer

import (
	"reflect"
	"testing"
)

// FuzzIoTHubProfilesLikeConcatenation holds IoTHubProfiles (one buffer for all its
// strings) to the plain concatenation it replaced, kept below as the reference: the
// same settings for any identity, token and transport.
func FuzzIoTHubProfilesLikeConcatenation(f *testing.F) {
	f.Add("contoso.azure-devices.net", "dev-1", "", "", "SharedAccessSignature sr=x&sig=y%3D&se=1", false)
	f.Add("contoso.azure-devices.net", "Dev.With:Colons@site=7$x", "mod a/b", "edge.local", "tok", true)
	f.Add("", "", "", "", "", false)
	f.Add("h", "a/b%", "m/", "", "t/%", false)
	f.Fuzz(func(t *testing.T, host, dev, mod, gw, token string, ws bool) {
		tr := TCP
		if ws {
			tr = WebSocket
		}
		id := Identity{Host: host, DeviceID: dev, ModuleID: mod, GatewayHostName: gw}
		got, want := IoTHubProfiles(id, token, tr), iotHubProfilesRef(id, token, tr)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v %+v %+v %q\nwant %+v %+v %+v %q", *got.MQTT, *got.AMQP, *got.HTTPS, got.ConnectionString,
				*want.MQTT, *want.AMQP, *want.HTTPS, want.ConnectionString)
		}
	})
}

// iotHubProfilesRef is IoTHubProfiles as it was before strBuf (as of commit cc84b7d),
// the reference for the fuzz target above.
func iotHubProfilesRef(id Identity, token string, t Transport) Profiles {
	host := id.connectHost()
	var (
		clientID, userPath, linkPath string
	)
	if id.ModuleID != "" {
		clientID = id.DeviceID + "/" + id.ModuleID
		userPath = id.DeviceID + "/" + id.ModuleID
		linkPath = "/devices/" + id.DeviceID + "/modules/" + id.ModuleID + "/messages/events"
	} else {
		clientID = id.DeviceID
		userPath = id.DeviceID
		linkPath = "/devices/" + id.DeviceID + "/messages/events"
	}
	topicBase := "devices/" + id.DeviceID
	if id.ModuleID != "" {
		topicBase += "/modules/" + id.ModuleID
	}

	// The three profiles in one allocation: they are built for every token.
	parts := new(struct {
		mqtt      MQTT
		amqp      AMQP
		https     HTTPS
		subscribe [1]string
	})
	mqtt, amqp, https := &parts.mqtt, &parts.amqp, &parts.https
	*mqtt = MQTT{
		Host:      host,
		Transport: t,
		ClientID:  clientID,
		// The user name always names the hub, also through an Edge gateway.
		Username: id.Host + "/" + userPath + "/?api-version=" + IoTHubAPIVersion,
		Password: token,
		Topics: MQTTTopics{
			Publish:     topicBase + "/messages/events/",
			TwinRequest: "$iothub/twin/res/#",
			TwinPatch:   "$iothub/twin/PATCH/properties/desired/#",
			Methods:     "$iothub/methods/POST/#",
		},
	}
	if id.ModuleID == "" {
		parts.subscribe[0] = "devices/" + id.DeviceID + "/messages/devicebound/#"
		mqtt.Topics.Subscribe = parts.subscribe[:]
	} else {
		// Modules receive no cloud-to-device messages; they get twin and method traffic.
		mqtt.Topics.Subscribe = []string{}
	}

	amqpUser := userPath
	if id.ModuleID != "" {
		amqpUser = id.DeviceID + "/modules/" + id.ModuleID
	}
	amqpUser += "@sas." + id.HubName()
	linkURLPath := escapePath(linkPath)
	*amqp = AMQP{
		Host:        host,
		Transport:   t,
		Username:    amqpUser,
		Password:    token,
		Address:     linkPath,
		CBSAudience: id.Resource(),
	}
	if t == WebSocket {
		mqtt.Port, amqp.Port = 443, 443
		mqtt.URL = "wss://" + host + ":443" + WebSocketPath
		amqp.URL = "wss://" + host + ":443" + WebSocketPath
		amqp.Subprotocol = AMQPWebSocketSubprotocol
	} else {
		mqtt.Port, amqp.Port = 8883, 5671
		mqtt.URL = "mqtts://" + host + ":8883"
		amqp.URL = "amqps://" + Escape(amqpUser) + ":" + Escape(token) + "@" + host + linkURLPath
	}

	*https = HTTPS{
		URL:           "https://" + host + linkURLPath + "?api-version=" + IoTHubAPIVersion,
		Authorization: token,
	}

	cs := "HostName=" + id.Host + ";DeviceId=" + id.DeviceID
	if id.ModuleID != "" {
		cs += ";ModuleId=" + id.ModuleID
	}
	cs += ";SharedAccessSignature=" + token
	if id.GatewayHostName != "" {
		cs += ";GatewayHostName=" + id.GatewayHostName
	}
	return Profiles{MQTT: mqtt, AMQP: amqp, HTTPS: https, ConnectionString: cs}
}
