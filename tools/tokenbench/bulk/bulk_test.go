package bulk

import (
	"io"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	admin := map[string]string{"TOKENSVC_ADMIN_TOKEN": "a"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"defaults", nil, admin, ""},
		{"no admin token", nil, nil, "TOKENSVC_ADMIN_TOKEN"},
		{"off the machine", []string{"-url", "http://example.com"}, admin, "loopback"},
		{"too many devices", []string{"-n", "2000000"}, admin, "-n"},
		{"raw without a Vault token", []string{"-raw-kv", "16", "-vault-addr", "http://127.0.0.1:8200"}, nil, "VAULT_TOKEN"},
		{"raw off the machine", []string{"-raw-kv", "16", "-vault-addr", "http://vault.example.com"}, map[string]string{"VAULT_TOKEN": "v"}, "loopback"},
		{"raw", []string{"-raw-kv", "16", "-vault-addr", "http://127.0.0.1:8200"}, map[string]string{"VAULT_TOKEN": "v"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(tt.args, env(tt.env), io.Discard)
			if tt.wantErr == "" {
				if err != nil || !strings.HasPrefix(c.Prefix, "imp-") {
					t.Fatalf("got %v (prefix %q), want no error and a generated prefix", err, c.Prefix)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
