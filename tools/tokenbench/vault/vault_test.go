package vault

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

func TestVaultConfigValidate(t *testing.T) {
	env := func(k string) string {
		switch k {
		case "TOKENSVC_ADMIN_TOKEN":
			return "0123456789abcdef0123"
		case "VAULT_TOKEN":
			return "hvs.test"
		}
		return ""
	}
	only := func(name string) func(string) string {
		return func(k string) string {
			if k == name {
				return env(k)
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"defaults", nil, env, ""},
		{"ipv6 loopback vault", []string{"-vault-addr", "https://[::1]:8200"}, env, ""},
		{"remote tokensvc", []string{"-url", "http://192.0.2.1:8080"}, env, "only loopback"},
		{"remote vault", []string{"-vault-addr", "https://vault.example.com:8200"}, env, "only loopback"},
		{"vault without scheme", []string{"-vault-addr", "127.0.0.1:8200"}, env, "-vault-addr"},
		{"no admin token", nil, only("VAULT_TOKEN"), "TOKENSVC_ADMIN_TOKEN"},
		{"no vault token", nil, only("TOKENSVC_ADMIN_TOKEN"), "VAULT_TOKEN"},
		{"key name with a slash", []string{"-transit-key", "a/../b"}, env, "-transit-key"},
		{"same hub twice", []string{"-kv-hub", "h", "-transit-hub", "h"}, env, "two different"},
		{"no duration", []string{"-d", "0"}, env, "-d"},
		{"too long", []string{"-d", "11m"}, env, "-d"},
		{"too many devices", []string{"-provision", "10001"}, env, "-provision"},
		{"no workers", []string{"-c", "0"}, env, "-c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(tt.args, tt.getenv, &strings.Builder{})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestHMACBodyIsTheSASStringToSign(t *testing.T) {
	tests := []struct {
		hub, device string
		expiry      int64
		want        string
	}{
		{"bench-kv", "raw-0", 1700000000, "bench-kv.azure-devices.net%2Fdevices%2Fraw-0\n1700000000"},
		{"h", "d:1", 5, "h.azure-devices.net%2Fdevices%2Fd%3A1\n5"},
	}
	for _, tt := range tests {
		var req struct {
			Input string `json:"input"`
		}
		if err := json.Unmarshal(hmacBody(tt.hub, tt.device, tt.expiry), &req); err != nil {
			t.Fatal(err)
		}
		got, err := base64.StdEncoding.DecodeString(req.Input)
		if err != nil || string(got) != tt.want {
			t.Errorf("got %q, %v; want %q", got, err, tt.want)
		}
	}
}

// TestRawHMACPhase drives a stand-in for Vault's transit/hmac: every request carries
// the token and a body, a 429 with Retry-After is a refusal and a 403 an error.
func TestRawHMACPhase(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/transit/hmac/k/sha2-256" || r.Header.Get("X-Vault-Token") != "tok" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.WriteHeader(http.StatusForbidden)
		default:
			w.Write([]byte(`{"data":{"hmac":"vault:v1:AAAA"}}`))
		}
	}))
	defer srv.Close()
	cfg := Config{VaultAddr: srv.URL, TransitMount: "transit", TransitKey: "k", VaultToken: "tok", KVHub: "h"}
	if err := probeHMAC(t.Context(), srv.Client(), cfg); err == nil {
		t.Fatal("probe: got nil after a 429, want an error")
	}
	n.Store(2) // from here on: 200s
	if err := probeHMAC(t.Context(), srv.Client(), cfg); err != nil {
		t.Fatalf("probe: %v", err)
	}
	n.Store(0)
	p := bench.Phase{Name: "raw", URL: hmacURL(cfg), Workers: 1, Duration: 10 * time.Second, Requests: 5, MaxWait: time.Second, Timeout: time.Second}
	r := runPhase(t.Context(), srv.Client(), cfg, p, nil)
	if r.OK != 3 || r.Refusals["429"] != 1 || r.Errors["403"] != 1 {
		t.Errorf("got ok %d refusals %v errors %v, want 3, 429×1, 403×1", r.OK, r.Refusals, r.Errors)
	}
}
