package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// runPhase is GET /token for devs, or the raw transit/hmac phase when devs is nil.
func runPhase(ctx context.Context, client *http.Client, cfg Config, p bench.Phase, devs []bench.Device) bench.Result {
	if devs != nil {
		return bench.TokenPhase(ctx, client, p, devs, cfg.Audience)
	}
	return bench.RunWorkers(ctx, p, func(w int) bench.AttemptFunc {
		seq := 0
		return func(ctx context.Context) (bench.Outcome, bool) {
			seq++
			body := hmacBody(cfg.KVHub, "raw-"+strconv.Itoa(w), time.Now().Add(time.Hour).Unix()+int64(seq))
			return tryHMAC(ctx, client, p.URL, cfg.VaultToken, body, p.Timeout), true
		}
	})
}

func hmacURL(cfg Config) string {
	return cfg.VaultAddr + "/v1/" + cfg.TransitMount + "/hmac/" + cfg.TransitKey + "/sha2-256"
}

// hmacBody is the transit/hmac request tokensvc sends for a device token: the SAS
// string-to-sign (URL-encoded resource, newline, expiry) as base64 input.
func hmacBody(hub, deviceID string, expiry int64) []byte {
	msg := url.QueryEscape(hub+".azure-devices.net/devices/"+deviceID) + "\n" + strconv.FormatInt(expiry, 10)
	b := make([]byte, 0, 16+base64.StdEncoding.EncodedLen(len(msg)))
	b = append(b, `{"input":"`...)
	b = base64.StdEncoding.AppendEncode(b, []byte(msg))
	return append(b, `"}`...)
}

// hmacRequest is a POST of body to Vault's transit/hmac at target.
func hmacRequest(ctx context.Context, target, token string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err == nil {
		req.Header.Set("X-Vault-Token", token)
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}

// tryHMAC is one POST to Vault's transit/hmac, classified like a token request.
func tryHMAC(ctx context.Context, client *http.Client, target, token string, body []byte, timeout time.Duration) bench.Outcome {
	return bench.TryRequest(ctx, client, timeout, func(ctx context.Context) (*http.Request, error) {
		return hmacRequest(ctx, target, token, body)
	})
}

// probeHMAC checks once that the raw phase's token and key work and Vault answers an
// HMAC in the form tokensvc reads.
func probeHMAC(ctx context.Context, client *http.Client, cfg Config) error {
	body, err := bench.ProbeRequest(ctx, client, "transit/hmac", func(ctx context.Context) (*http.Request, error) {
		return hmacRequest(ctx, hmacURL(cfg), cfg.VaultToken, hmacBody(cfg.KVHub, "probe", time.Now().Unix()))
	})
	if err != nil {
		return err
	}
	var r struct {
		Data struct {
			HMAC string `json:"hmac"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("probe transit/hmac: %w", err)
	}
	if !strings.HasPrefix(r.Data.HMAC, "vault:v") {
		return fmt.Errorf("probe transit/hmac: no HMAC in the answer: %.200s", body)
	}
	return nil
}
