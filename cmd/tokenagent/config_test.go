package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/cliflags"
)

func TestConfigLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.conf")
	os.WriteFile(file, []byte(`# comment
service-url = https://tokensvc.example:8443
device-id = from-file
credential-file = /etc/tokenagent/device.key
property = a=1
property = b=2
ttl = 10m
`), 0o600)
	env := map[string]string{
		"TOKENAGENT_CONFIG":    file,
		"TOKENAGENT_DEVICE_ID": "from-env",
		"TOKENAGENT_PROPERTY":  "c=3\nd=4",
		"TOKENAGENT_LINK":      "mqtt",
	}
	c, err := parseConfig([]string{"-link", "amqp", "-property", "e=5"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"service-url from file", c.ServiceURL, "https://tokensvc.example:8443"},
		{"device-id: env beats file", c.DeviceID, "from-env"},
		{"link: flag beats env", c.Link, "amqp"},
		{"property: flag list replaces lower layers", strings.Join(c.Properties, ","), "e=5"},
		{"ttl from file", c.TTL.String(), (10 * time.Minute).String()},
		{"default audience", c.Audience, "tokensvc"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	c2, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c2.Properties, []string{"c=3", "d=4"}) {
		t.Errorf("property from env: got %q, want [c=3 d=4]", c2.Properties)
	}
}

func TestConfigValidate(t *testing.T) {
	base := []string{"-service-url", "https://svc.example", "-device-id", "d1", "-credential-file", "/k"}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"minimal", nil, ""},
		{"http to loopback", []string{"-service-url", "http://127.0.0.1:8080"}, ""},
		{"http elsewhere", []string{"-service-url", "http://svc.example"}, "must be https"},
		{"bad device id", []string{"-device-id", "a/b"}, "not a valid IoT Hub device ID"},
		{"ttl under a minute", []string{"-ttl", "30s"}, "ttl must be"},
		{"telemetry without link", []string{"-telemetry", "stdin"}, "telemetry needs link"},
		{"c2d needs mqtt", []string{"-link", "amqp", "-c2d", "stdout"}, "c2d needs link mqtt"},
		{"relative telemetry socket", []string{"-link", "mqtt", "-telemetry", "unix:rel.sock"}, "telemetry must be"},
		{"exec-env without exec", []string{"-exec-env", "A={{ .Token }}"}, "exec-env needs exec"},
		{"bad template spec", []string{"-template", "only-src"}, "SRC:DST"},
		{"template mode", []string{"-template", "a.tmpl:/run/out:0640"}, ""},
		{"bad signal", []string{"-exec", "x", "-exec-signal", "KILL"}, "exec-signal"},
		{"exec without a program", []string{"-exec", `["", "-v"]`}, "exec: empty command"},
		{"bad link", []string{"-link", "http"}, "link must be"},
		{"bad nonce mode", []string{"-nonce", "sometimes"}, "nonce must be"},
		{"nonce always", []string{"-nonce", "always"}, ""},
		{"amqp cbs", []string{"-link", "amqp", "-amqp-auth", "cbs", "-telemetry", "unix:/run/t.sock"}, ""},
		{"backoff", []string{"-backoff-min", "2s", "-backoff-max", "1s"}, "backoff-max"},
		{"certificate", []string{"-certificate", "-cert-dir", "/var/lib/tokenagent/certs", "-link", "mqtt"}, ""},
		{"certificate ttl 5 min", []string{"-certificate", "-ttl", "5m"}, ""},
		{"certificate ttl under 5 min", []string{"-certificate", "-ttl", "2m"}, "at least 5m0s for a certificate"},
		{"certificate key type", []string{"-certificate", "-cert-key-type", "ed25519"}, "cert-key-type must be"},
		{"certificate over amqp", []string{"-certificate", "-link", "amqp"}, "links over mqtt"},
		{"cert-dir without certificate", []string{"-cert-dir", "/tmp/c"}, "need certificate"},
		{"certificate and socket", []string{"-certificate", "-socket", "/run/t.sock"}, "socket serves tokens"},
		{"certificate and gateway", []string{"-certificate", "-gateway", "-leaf", "l1", "-link", "mqtt"}, "does not take certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkValidate(t, append(slices.Clone(base), tt.args...), tt.wantErr) })
	}
}

// TestREADMEConfigurationTable holds README.md's option table and the flag set to each
// other, both ways: option names, defaults, and environment names derived by the rule
// the README states (TOKENAGENT_<NAME>).
func TestREADMEConfigurationTable(t *testing.T) {
	fresh := func() *cliflags.Set {
		c := defaults()
		return flagSet(&c, io.Discard)
	}
	for _, err := range cliflags.CheckDocFile("README.md", "## Configuration reference", fresh) {
		t.Errorf("README.md: %v", err)
	}
}

func TestVersionFlag(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"-version"}, func(string) string { return "" }, strings.NewReader(""), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "tokenagent ") {
		t.Errorf("got %q, want a line starting with %q", got, "tokenagent ")
	}
}

// checkValidate parses args and wants Validate to fail with an error containing
// wantErr, or to pass when wantErr is empty.
func checkValidate(t *testing.T, args []string, wantErr string) {
	t.Helper()
	c, err := parseConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("got %v, want nil", err)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		t.Errorf("got %v, want an error containing %q", err, wantErr)
	}
}
