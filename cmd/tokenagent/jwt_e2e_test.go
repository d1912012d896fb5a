package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer/jwtpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestAgentEndToEndJWTBroker runs tokensvc with its issuer key ring (4-second JWTs for
// a jwtbroker hub), the agent through run with the same -link mqtt as for IoT Hub, and
// the stand-in broker that verifies each JWT against the service's JWKS. With CUSTOM-JWT
// enhanced authentication (Event Grid) the agent must put every new token on its open
// MQTT 5 session by AUTH 0x19: one CONNECT in all. With the token as an MQTT 3.1.1
// password (EMQX) it must reconnect with each new token before the old one expires.
// Every message is delivered, no session is dropped for an expired token, and no token
// reaches the agent's log.
func TestAgentEndToEndJWTBroker(t *testing.T) {
	// tokenTTL is renewed at 80 %: the 2 s margin keeps a loaded CI machine from turning
	// a late renewal into an expired-token drop, which the test counts as a failure.
	const tokenTTL = 10 * time.Second
	if testing.Short() {
		t.Skip("about 60 s of real time")
	}
	tests := []struct {
		name, host, authMethod string
		settings               map[string]string
		// reauth: new tokens go on the open session; otherwise by reconnecting.
		reauth bool
	}{
		{name: "Event Grid, MQTT 5 CUSTOM-JWT", host: "ns1.westeurope-1.ts.eventgrid.azure.net", authMethod: "CUSTOM-JWT",
			settings: map[string]string{"audience": `"ns1.westeurope-1.ts.eventgrid.azure.net/"`, "authMethod": `"CUSTOM-JWT"`},
			reauth:   true},
		{name: "EMQX, MQTT 3.1.1 password", host: "emqx.example.com",
			settings: map[string]string{"mqttVersion": `"3.1.1"`, "claims": `{"acl": {"pub": ["devices/{deviceId}/telemetry"]}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := jwtpeer.StartService(t, nil)
			hub := svc.CreateHub(domain.Hub{Name: "b", Kind: jwtbroker.Name, Hostname: tt.host, DefaultTTL: tokenTTL,
				MaxTTL: tokenTTL, Settings: tt.settings})
			var aud string
			_ = json.Unmarshal([]byte(hub.Settings["audience"]), &aud)
			secret := svc.DeviceSecret("pump-0002", "b")
			broker := jwtpeer.StartBroker(t, jwtpeer.BrokerOptions{
				VerifyOptions: jwtpeer.VerifyOptions{JWKSURL: svc.JWKSURL(), HTTPClient: svc.HTTPClient,
					Issuer: jwtpeer.ServiceIssuer, Audience: aud},
				Cert: svc.CA.Issue(t, testca.Spec{CommonName: tt.host, Hosts: []string{tt.host}}).TLS(), AuthMethod: tt.authMethod,
			})
			dir := t.TempDir()
			secretFile, caFile := filepath.Join(dir, "device.secret"), filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			svc.CA.WriteCert(t, caFile)

			a := mustStartAgent(t, []string{
				"-service-url", svc.URL, "-ca-file", caFile, "-device-id", "pump-0002", "-credential-file", secretFile,
				"-state-dir", filepath.Join(dir, "state"), "-boot-splay", "0", "-backoff-min", "200ms", "-backoff-max", "1s",
				"-log-level", "debug", "-link", "mqtt", "-broker-addr", broker.Addr, "-telemetry", "stdin", "-telemetry-format", "raw",
			})
			// Raw lines, no message properties: mqttlink (3.1.1) appends them to the topic as
			// an IoT Hub property bag, which other brokers read as another topic.
			pub := startPublisher(a.stdin, 25*time.Millisecond)
			testpeer.WaitFor(t, "three new tokens in use", 60*time.Second, func() bool {
				s := broker.Stats()
				return s.ReAuths+s.Accepted >= 4
			})
			sent := pub.halt()
			testpeer.WaitFor(t, "all messages at the broker", 10*time.Second, func() bool { return len(broker.Published()) >= sent })
			// The broker counts a connection when it accepts it, the agent when the CONNACK
			// is in: stop the agent only once it has seen every connection the broker took.
			testpeer.WaitFor(t, "the agent connected as often as the broker accepted", 10*time.Second, func() bool {
				return strings.Count(a.stderr.String(), `"msg":"connected"`) >= broker.Stats().Accepted
			})
			// Likewise for re-authentication: the broker counts an AUTH when it accepts
			// it, the agent when the answer is in (a CI run once stopped it in between).
			testpeer.WaitFor(t, "the agent renewed as often as the broker re-authenticated", 10*time.Second, func() bool {
				return strings.Count(a.stderr.String(), `"msg":"token renewed on the open connection"`) >= broker.Stats().ReAuths
			})
			stats := a.stop(t)

			seen := map[int]bool{}
			for _, p := range broker.Published() {
				var line struct{ Body struct{ Seq int } } // raw format: the publisher's JSON line is the body
				if err := json.Unmarshal(p.Payload, &line); err != nil {
					t.Fatalf("payload %q: %v", p.Payload, err)
				}
				seen[line.Body.Seq] = true
			}
			for i := range sent {
				if !seen[i] {
					t.Errorf("message %d never reached the broker", i)
				}
			}
			bs, mqtt := broker.Stats(), stats["mqtt"]
			t.Logf("sent %d; agent mqtt %v, keeper %v; broker %+v", sent, mqtt, stats["keeper"], bs)
			if tt.reauth && (bs.Accepted != 1 || mqtt["Connects"] != 1 || mqtt["Rotations"] != 0 || mqtt["ReAuths"] != bs.ReAuths) {
				t.Errorf("agent %v, broker %+v: want one session for the whole run, every new token by AUTH", mqtt, bs)
			}
			if !tt.reauth && (bs.ReAuths != 0 || mqtt["Connects"] != bs.Accepted || mqtt["Rotations"] < 3) {
				t.Errorf("agent %v, broker %+v: want a reconnect per new token", mqtt, bs)
			}
			if mqtt["Lost"] != 0 || len(bs.Refused) != 0 || bs.ExpiredDrops != 0 || bs.Denied != 0 {
				t.Errorf("agent %v, broker %+v: want nothing lost, refused, expired or denied", mqtt, bs)
			}
			log := a.stderr.String()
			for _, tok := range broker.Tokens() {
				if strings.Contains(log, tok) || strings.Contains(log, tok[strings.LastIndexByte(tok, '.')+1:]) {
					t.Fatal("a token (or its signature) is in the agent's log")
				}
			}
		})
	}
}
