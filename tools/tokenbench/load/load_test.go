package load

import (
	"strings"
	"testing"
)

func TestConfigRefusesNonLoopbackAndUnbounded(t *testing.T) {
	env := func(string) string { return "0123456789abcdef0123" }
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"loopback", []string{"-provision", "2"}, false},
		{"ipv6 loopback", []string{"-url", "http://[::1]:9", "-devices", "f"}, false},
		{"remote host", []string{"-url", "http://example.com:8080", "-provision", "2"}, true},
		{"no devices", nil, true},
		{"both device sources", []string{"-provision", "2", "-devices", "f"}, true},
		{"no duration", []string{"-provision", "2", "-d", "0"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(tt.args, env, &strings.Builder{})
			if (err != nil) != tt.wantErr {
				t.Errorf("got %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}
