package vault

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

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
