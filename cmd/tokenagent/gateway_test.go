package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

func TestGatewayConfigValidate(t *testing.T) {
	base := []string{"-service-url", "https://svc.example", "-device-id", "edge-1", "-credential-file", "/k",
		"-gateway", "-link", "amqp", "-leaf", "lora-1", "-gateway-udp", "0.0.0.0:1700"}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"minimal", nil, ""},
		{"mqtt upstream, local broker with TLS", []string{"-link", "mqtt", "-gateway-mqtt", ":8883", "-gateway-mqtt-cert", "/c", "-gateway-mqtt-key", "/k"}, ""},
		{"no upstream", []string{"-link", "none"}, "gateway needs link"},
		{"cert without key", []string{"-gateway-mqtt", ":8883", "-gateway-mqtt-cert", "/c"}, "go together"},
		{"bad leaf", []string{"-leaf", "a/b"}, "not a valid IoT Hub device ID"},
		{"bad intake address", []string{"-gateway-line", "nowhere"}, "gateway-line must be host:port"},
		{"telemetry input", []string{"-telemetry", "stdin"}, "telemetry, c2d and module must be unset"},
		{"queue limit", []string{"-queue-limit", "0"}, "queue-limit"},
		{"line format", []string{"-gateway-line-format", "xml"}, "gateway-line-format"},
		{"no memory limit", []string{"-gateway-memory-limit", "0"}, ""},
		{"negative memory limit", []string{"-gateway-memory-limit", "-1"}, "gateway-memory-limit"},
		{"more workers", []string{"-gateway-workers", "128"}, ""},
		{"no workers", []string{"-gateway-workers", "0"}, "gateway-workers"},
		// The gateway's own token goes to no local program: these would be ignored.
		{"template", []string{"-template", "a.tmpl:/run/out"}, "template, exec and socket must be unset"},
		{"exec", []string{"-exec", "/usr/bin/legacy"}, "template, exec and socket must be unset"},
		{"socket", []string{"-socket", "/run/token.sock"}, "template, exec and socket must be unset"},
		{"queue bytes overflow", []string{"-queue-max-mb", "9999999999999"}, "queue-max-mb"},
		{"queue bytes, a TiB", []string{"-queue-max-mb", "1048576"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkValidate(t, append(slices.Clone(base), tt.args...), tt.wantErr) })
	}
	c, _ := parseConfig(base[:6], func(string) string { return "" }, io.Discard)
	if err := c.Validate(); err != nil {
		t.Errorf("without -gateway the gateway options are not checked: %v", err)
	}
}

func TestReadLeaves(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		want    map[string]string
		wantErr string
	}{
		{"ids and passwords", write("ok", "# leaves\nlora-1 s3cret\nlora-2\n\n", 0o600), map[string]string{"lora-0": "", "lora-1": "s3cret", "lora-2": ""}, ""},
		{"passwords readable by others", write("open", "lora-1 s3cret\n", 0o644), nil, "chmod 600"},
		{"ids only may be readable", write("ids", "lora-1\n", 0o644), map[string]string{"lora-0": "", "lora-1": ""}, ""},
		{"listed twice", write("dup", "lora-1\nlora-1\n", 0o600), nil, "listed twice"},
		{"three fields", write("bad", "lora-1 a b\n", 0o600), nil, "want a leaf ID"},
		{"bad id", write("badid", "a/b\n", 0o600), nil, "want a leaf ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readLeaves([]string{"lora-0"}, tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatal("the error shows a password")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("leaf %s: got password %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestGatewayEndToEndRun runs the agent in gateway mode through run, configured as an
// operator would (a leaves file with one local password, a local MQTT broker and a UDP
// intake, AMQP upstream): a plain-MQTT leaf and a UDP leaf reach the rhea peer, each as
// itself over one connection, with tokens the real service minted for the gateway's
// children; the agent stops cleanly and logs no secret.
func TestGatewayEndToEndRun(t *testing.T) {
	f := testpeer.NewGatewayFixture(t, "edge-run", []string{"lora-0001", "lora-0002"}, time.Minute)
	peer := f.StartAMQP(t)
	leaves := filepath.Join(f.Dir, "leaves")
	if err := os.WriteFile(leaves, []byte("lora-0001 pw-0001\nlora-0002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mqttAddr, udpAddr := freeAddr(t, "tcp"), freeAddr(t, "udp")
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, agentArgs(f.Fixture, filepath.Join(f.Dir, "state"), "-gateway", "-link", "amqp",
			"-broker-addr", peer.Addr, "-leaves-file", leaves, "-gateway-mqtt", mqttAddr, "-gateway-udp", udpAddr,
			"-property", "site=plant-7"), func(string) string { return "" }, strings.NewReader(""), io.Discard, logs)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	var cl paho.Client
	testpeer.WaitFor(t, "the local broker", 10*time.Second, func() bool {
		cl = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("lora-0001").SetUsername("lora-0001").
			SetPassword("pw-0001").SetProtocolVersion(4).SetAutoReconnect(false))
		tok := cl.Connect()
		return tok.WaitTimeout(2*time.Second) && tok.Error() == nil
	})
	defer cl.Disconnect(0)
	for i := range 5 {
		if tok := cl.Publish("devices/lora-0001/messages/events/", 1, false, fmt.Sprint("mqtt-", i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "lora-0002 udp-%d", i)
		c.Close()
	}
	testpeer.WaitFor(t, "ten messages at the peer", 20*time.Second, func() bool { return len(peer.Events("message")) >= 10 })
	for _, e := range peer.Events("message") {
		if !strings.HasPrefix(e.Body, map[string]string{"lora-0001": "mqtt-", "lora-0002": "udp-"}[e.Device]) || e.Properties["site"] != "plant-7" {
			t.Errorf("message %q as %s with %v", e.Body, e.Device, e.Properties)
		}
	}
	if n := len(peer.Events("open")); n != 1 {
		t.Errorf("AMQP connections: got %d, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: got %v, want nil", err)
	}
	out := logs.String()
	for _, secret := range []string{f.Secret, "pw-0001", "SharedAccessSignature"} {
		if strings.Contains(out, secret) {
			t.Fatalf("the agent log holds a secret (%.12s…)", secret)
		}
	}
	if !strings.Contains(out, `"msg":"stopped"`) {
		t.Error("no stopped line with the counters")
	}
}
