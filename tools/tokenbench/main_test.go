package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/tools/tokenbench/load"
	"github.com/tokensvc/tokensvc/tools/tokenbench/storm"
	"github.com/tokensvc/tokensvc/tools/tokenbench/vault"
)

// TestConfigRefusesOffMachineAndUnbounded parses the flags of every benchmark: runs
// that would leave this machine, run without bound or without the tokens they need are
// refused before anything starts.
func TestConfigRefusesOffMachineAndUnbounded(t *testing.T) {
	tokens := map[string]string{"TOKENSVC_ADMIN_TOKEN": "0123456789abcdef0123", "VAULT_TOKEN": "hvs.test"}
	env := func(k string) string { return tokens[k] }
	without := func(name string) func(string) string {
		return func(k string) string {
			if k == name {
				return ""
			}
			return tokens[k]
		}
	}
	parse := map[string]func([]string, func(string) string, io.Writer) error{
		"load": errOf(load.ParseConfig), "storm": errOf(storm.ParseConfig), "vault": errOf(vault.ParseConfig),
	}
	dir := t.TempDir()
	tests := []struct {
		name    string
		cmd     string
		args    []string
		getenv  func(string) string
		wantErr string // "" for no error
	}{
		{"load: loopback", "load", []string{"-provision", "2"}, env, ""},
		{"load: ipv6 loopback", "load", []string{"-url", "http://[::1]:9", "-devices", "f"}, env, ""},
		{"load: remote host", "load", []string{"-url", "http://example.com:8080", "-provision", "2"}, env, "only loopback"},
		{"load: no devices", "load", nil, env, "-provision N or -devices FILE"},
		{"load: both device sources", "load", []string{"-provision", "2", "-devices", "f"}, env, "-provision N or -devices FILE"},
		{"load: provision without admin token", "load", []string{"-provision", "2"}, without("TOKENSVC_ADMIN_TOKEN"), "TOKENSVC_ADMIN_TOKEN"},
		{"load: no duration", "load", []string{"-provision", "2", "-d", "0"}, env, "-d"},
		{"load: stray argument", "load", []string{"-provision", "2", "extra"}, env, "unexpected arguments"},

		{"storm: loopback with cacert", "storm", []string{"-url", "https://127.0.0.1:8443", "-cacert", "ca.pem"}, env, ""},
		{"storm: localhost insecure", "storm", []string{"-url", "https://localhost:8443", "-insecure"}, env, ""},
		{"storm: plain http", "storm", []string{"-url", "http://127.0.0.1:8080", "-insecure"}, env, "want https"},
		{"storm: remote host", "storm", []string{"-url", "https://10.0.0.1:8443", "-insecure"}, env, "only loopback"},
		{"storm: remote metrics", "storm", []string{"-insecure", "-metrics-url", "http://example.com/metrics"}, env, "-metrics-url"},
		{"storm: no trust decision", "storm", nil, env, "-cacert FILE or -insecure"},
		{"storm: both trust flags", "storm", []string{"-cacert", "ca.pem", "-insecure"}, env, "-cacert FILE or -insecure"},
		{"storm: no admin token", "storm", []string{"-insecure"}, without("TOKENSVC_ADMIN_TOKEN"), "TOKENSVC_ADMIN_TOKEN"},
		{"storm: no devices", "storm", []string{"-insecure", "-devices", "0"}, env, "-devices"},
		{"storm: too many devices", "storm", []string{"-insecure", "-devices", "1000001"}, env, "-devices"},
		{"storm: unbounded duration", "storm", []string{"-insecure", "-max-duration", "0"}, env, "-max-duration"},
		{"storm: too long", "storm", []string{"-insecure", "-max-duration", "31m"}, env, "-max-duration"},
		{"storm: no workers", "storm", []string{"-insecure", "-c", "0"}, env, "-c"},
		{"storm: baseline without its certificate", "storm", []string{"-insecure", "-baseline"}, env, "-tls-cert"},
		{"storm: baseline with certificate", "storm", []string{"-insecure", "-baseline", "-tls-cert", filepath.Join(dir, "c"), "-tls-key", filepath.Join(dir, "k")}, env, ""},

		{"vault: defaults", "vault", nil, env, ""},
		{"vault: ipv6 loopback vault", "vault", []string{"-vault-addr", "https://[::1]:8200"}, env, ""},
		{"vault: remote tokensvc", "vault", []string{"-url", "http://192.0.2.1:8080"}, env, "only loopback"},
		{"vault: remote vault", "vault", []string{"-vault-addr", "https://vault.example.com:8200"}, env, "only loopback"},
		{"vault: vault without scheme", "vault", []string{"-vault-addr", "127.0.0.1:8200"}, env, "-vault-addr"},
		{"vault: no admin token", "vault", nil, without("TOKENSVC_ADMIN_TOKEN"), "TOKENSVC_ADMIN_TOKEN"},
		{"vault: no vault token", "vault", nil, without("VAULT_TOKEN"), "VAULT_TOKEN"},
		{"vault: key name with a slash", "vault", []string{"-transit-key", "a/../b"}, env, "-transit-key"},
		{"vault: same hub twice", "vault", []string{"-kv-hub", "h", "-transit-hub", "h"}, env, "two different"},
		{"vault: no duration", "vault", []string{"-d", "0"}, env, "-d"},
		{"vault: too long", "vault", []string{"-d", "11m"}, env, "-d"},
		{"vault: too many devices", "vault", []string{"-provision", "10001"}, env, "-provision"},
		{"vault: no workers", "vault", []string{"-c", "0"}, env, "-c"},
		{"vault: unknown transit mode", "vault", []string{"-transit-mode", "groupKey"}, env, "-transit-mode"},
		{"vault: device-key transit hub", "vault", []string{"-transit-mode", "deviceKey"}, env, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parse[tt.cmd](tt.args, tt.getenv, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestRunSubcommands: no subcommand or an unknown one prints the usage and fails; the
// helper subcommands answer.
func TestRunSubcommands(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantErr    bool
		wantStdout string
		wantStderr string
	}{
		{"none", nil, true, "", "usage: tokenbench"},
		{"unknown", []string{"bench"}, true, "", `unknown subcommand "bench"`},
		{"help", []string{"help"}, false, "usage: tokenbench", ""},
		{"version", []string{"version"}, false, "tokenbench ", ""},
		{"freeport", []string{"freeport"}, false, "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(t.Context(), tt.args, func(string) string { return "" }, &stdout, &stderr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got %v, wantErr %v", err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("got stdout %q stderr %q, want %q and %q", stdout.String(), stderr.String(), tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// errOf is parse without its configuration.
func errOf[C any](parse func([]string, func(string) string, io.Writer) (C, error)) func([]string, func(string) string, io.Writer) error {
	return func(args []string, getenv func(string) string, stderr io.Writer) error {
		_, err := parse(args, getenv, stderr)
		return err
	}
}
