package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// VaultConfig is one `tokenbench vault` run: tokensvc on the Vault store, GET /token
// keep-alive HS256 for devices on a KV hub (keys cached by tokensvc) and on a Transit
// hub (every token signed by Vault's transit/hmac), against Vault's own transit/hmac
// driven directly by the same workers.
type VaultConfig struct {
	URL          string
	VaultAddr    string
	TransitMount string
	TransitKey   string
	Provision    int
	KVHub        string
	TransitHub   string
	DevicePrefix string
	Audience     string
	Workers      int
	Duration     time.Duration
	Warmup       time.Duration
	MaxWait      time.Duration
	Timeout      time.Duration
	ServerPID    int
	VaultPID     int
	MetricsURL   string
	JSON         bool
	AdminToken   string
	VaultToken   string
}

var vaultName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Validate rejects runs that would be unbounded or leave this machine.
func (c VaultConfig) Validate() error {
	for flagName, raw := range map[string]string{"-url": c.URL, "-vault-addr": c.VaultAddr} {
		if err := checkLoopbackURL(flagName, raw, "http", "https"); err != nil {
			return err
		}
	}
	switch {
	case c.AdminToken == "":
		return errors.New("vault provisions its devices: set TOKENSVC_ADMIN_TOKEN")
	case c.VaultToken == "":
		return errors.New("the raw transit/hmac phase needs VAULT_TOKEN (a token that may use transit/hmac on -transit-key)")
	case !vaultName.MatchString(c.TransitKey) || !vaultName.MatchString(c.TransitMount):
		return errors.New("-transit-key and -transit-mount: letters, digits, '_', '.', '-'")
	case c.Provision < 1 || c.Provision > 10_000:
		return errors.New("-provision: 1 to 10000 devices per hub")
	case c.KVHub == "" || c.TransitHub == "" || c.KVHub == c.TransitHub:
		return errors.New("-kv-hub and -transit-hub: two different hub names")
	case c.Workers < 1 || c.Workers > 10_000:
		return errors.New("-c: 1 to 10000 workers")
	case c.Duration <= 0 || c.Duration > 10*time.Minute:
		return errors.New("-d: a duration above 0 and at most 10m")
	case c.Warmup < 0 || c.Warmup > time.Minute:
		return errors.New("-warmup within 0..1m")
	case c.MaxWait <= 0 || c.Timeout <= 0:
		return errors.New("-max-wait and -timeout must be positive")
	}
	return nil
}

func parseVaultConfig(args []string, getenv func(string) string, stderr io.Writer) (VaultConfig, error) {
	var c VaultConfig
	fs := flag.NewFlagSet("tokenbench vault", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "tokensvc base URL, running with TOKENSVC_STORE=vault (loopback only)")
	fs.StringVar(&c.VaultAddr, "vault-addr", "http://127.0.0.1:8200", "Vault's address, the one tokensvc uses (loopback only)")
	fs.StringVar(&c.TransitMount, "transit-mount", "transit", "Transit mount of -transit-key")
	fs.StringVar(&c.TransitKey, "transit-key", "bench-raw", "Transit key (type hmac) the raw phase computes HMACs with")
	fs.IntVar(&c.Provision, "provision", 200, "HS256 devices to create on each hub")
	fs.StringVar(&c.KVHub, "kv-hub", "bench-kv", "hub whose keys live in KV (created if absent)")
	fs.StringVar(&c.TransitHub, "transit-hub", "bench-transit", "hub whose keys live in Transit (created with transit: true if absent)")
	fs.StringVar(&c.DevicePrefix, "device-prefix", "", "device ID prefix (default: vault-<time>-)")
	fs.StringVar(&c.Audience, "audience", "tokensvc", "aud of the assertions (TOKENSVC_AUDIENCE of the service)")
	fs.IntVar(&c.Workers, "c", 32, "concurrent workers (each a keep-alive connection), the same in every phase")
	fs.DurationVar(&c.Duration, "d", 15*time.Second, "measured duration of each phase")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "unmeasured load before each phase (it also fills tokensvc's key cache)")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Second, "longest Retry-After honoured before retrying")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "report tokensvc's CPU per request, from /proc")
	fs.IntVar(&c.VaultPID, "vault-pid", 0, "report Vault's CPU per request, from /proc")
	fs.StringVar(&c.MetricsURL, "metrics-url", "", "tokensvc's /metrics, for Vault reads per phase (default <url>/metrics; \"off\" to skip)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.URL = strings.TrimRight(c.URL, "/")
	c.VaultAddr = strings.TrimRight(c.VaultAddr, "/")
	switch c.MetricsURL {
	case "":
		c.MetricsURL = c.URL + "/metrics"
	case "off":
		c.MetricsURL = ""
	}
	c.AdminToken = getenv("TOKENSVC_ADMIN_TOKEN")
	c.VaultToken = getenv("VAULT_TOKEN")
	if c.DevicePrefix == "" {
		c.DevicePrefix = fmt.Sprintf("vault-%d-", time.Now().Unix())
	}
	return c, c.Validate()
}

// VaultResult is one phase of a vault run.
type VaultResult struct {
	Result
	// VaultCPUPerReq is Vault's CPU time per successful request (-vault-pid).
	VaultCPUPerReq Micros `json:"vaultCpuUsPerRequest,omitempty"`
	// VaultReads is how many reads tokensvc's key cache made to Vault in the phase
	// (absent: not measured, or not a tokensvc phase).
	VaultReads *float64 `json:"vaultReads,omitempty"`
}

// VaultReport is a whole vault run, as printed by -json.
type VaultReport struct {
	Devices   int           `json:"devicesPerHub"`
	BodyBytes int           `json:"bodyBytes"`
	Results   []VaultResult `json:"results"`
	// KVRatio is tokensvc (KV, cached) / raw transit/hmac throughput (target ≥ 20).
	KVRatio float64 `json:"kvOverRawTransit,omitempty"`
	// TransitRatio is tokensvc (Transit hub) / raw transit/hmac throughput (target ≥ 0.8).
	TransitRatio float64 `json:"transitOverRawTransit,omitempty"`
}

// vaultBench runs `tokenbench vault`.
func vaultBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseVaultConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	var dials atomic.Int64
	client := newClient(cfg.Workers, &dials)
	defer client.CloseIdleConnections()

	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	kvDevs, trDevs, err := provisionVaultHubs(pctx, client, cfg)
	cancel()
	if err != nil {
		return err
	}
	body, err := probe(ctx, client, cfg.URL+"/token", newSigner(cfg.Audience, "probe-").sign(kvDevs[0], time.Now()))
	if err != nil {
		return err
	}
	if _, err := probe(ctx, client, cfg.URL+"/token", newSigner(cfg.Audience, "probe-").sign(trDevs[0], time.Now())); err != nil {
		return fmt.Errorf("transit hub: %w", err)
	}
	if err := probeHMAC(ctx, client, cfg); err != nil {
		return err
	}

	rep := VaultReport{Devices: cfg.Provision, BodyBytes: len(body)}
	phases := []struct {
		name    string
		devices []Device // nil: the raw transit/hmac phase
	}{
		{"tokensvc KV (cached)", kvDevs},
		{"vault transit/hmac", nil},
		{"tokensvc Transit", trDevs},
	}
	for _, ph := range phases {
		r, err := measureVaultPhase(ctx, client, cfg, ph.name, ph.devices, &dials)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if len(rep.Results) == 3 && rep.Results[1].Throughput > 0 {
		rep.KVRatio = rep.Results[0].Throughput / rep.Results[1].Throughput
		rep.TransitRatio = rep.Results[2].Throughput / rep.Results[1].Throughput
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printVault(stdout, cfg, rep)
	return ctx.Err()
}

// provisionVaultHubs creates the Transit hub (transit: true) and cfg.Provision HS256
// devices on each hub.
func provisionVaultHubs(ctx context.Context, client *http.Client, cfg VaultConfig) (kv, tr []Device, err error) {
	kv, err = provision(ctx, client, cfg.URL, cfg.AdminToken, cfg.KVHub, cfg.DevicePrefix+"kv-", cfg.Provision)
	if err != nil {
		return nil, nil, fmt.Errorf("KV hub: %w", err)
	}
	if err := ensureHub(ctx, client, cfg.URL, cfg.AdminToken, cfg.TransitHub, true); err != nil {
		return nil, nil, err
	}
	tr, err = provision(ctx, client, cfg.URL, cfg.AdminToken, cfg.TransitHub, cfg.DevicePrefix+"tr-", cfg.Provision)
	if err != nil {
		return nil, nil, fmt.Errorf("Transit hub: %w", err)
	}
	return kv, tr, nil
}

// measureVaultPhase warms up, then measures one phase with tokensvc's and Vault's CPU
// and tokensvc's Vault reads around it.
func measureVaultPhase(ctx context.Context, client *http.Client, cfg VaultConfig, name string, devs []Device, dials *atomic.Int64) (VaultResult, error) {
	target := cfg.URL + "/token"
	if devs == nil {
		target = hmacURL(cfg)
	}
	p := phase{name: name, url: target, workers: cfg.Workers, duration: cfg.Warmup, maxWait: cfg.MaxWait, timeout: cfg.Timeout}
	if cfg.Warmup > 0 {
		runVaultPhase(ctx, client, cfg, p, devs)
	}
	p.duration = cfg.Duration
	var before map[string]float64
	if cfg.MetricsURL != "" && devs != nil {
		var err error
		if before, err = scrapeCounters(ctx, client, cfg.MetricsURL, storeReadMetrics); err != nil {
			return VaultResult{}, err
		}
	}
	pids := []int{cfg.ServerPID, cfg.VaultPID}
	cpu0 := make([]time.Duration, len(pids))
	for i, pid := range pids {
		if pid > 0 {
			var err error
			if cpu0[i], err = procCPU(pid); err != nil {
				return VaultResult{}, err
			}
		}
	}
	dials0, self0 := dials.Load(), selfCPU()
	r := VaultResult{Result: runVaultPhase(ctx, client, cfg, p, devs)}
	r.NewConns = int(dials.Load() - dials0)
	if r.OK == 0 {
		return r, nil
	}
	perReq := func(d time.Duration) Micros { return Micros(d / time.Duration(r.OK)) }
	r.ClientCPUPerReq = perReq(selfCPU() - self0)
	for i, pid := range pids {
		if pid <= 0 {
			continue
		}
		c1, err := procCPU(pid)
		if err != nil {
			return r, err
		}
		if i == 0 {
			r.ServerCPUPerReq = perReq(c1 - cpu0[i])
		} else {
			r.VaultCPUPerReq = perReq(c1 - cpu0[i])
		}
	}
	if before != nil {
		after, err := scrapeCounters(ctx, client, cfg.MetricsURL, storeReadMetrics)
		if err != nil {
			return r, err
		}
		if v, ok := counterDelta(before, after)["tokensvc_key_cache_backend_reads_total"]; ok {
			r.VaultReads = &v
		}
	}
	return r, nil
}

// runVaultPhase is GET /token for devs, or the raw transit/hmac phase when devs is nil.
func runVaultPhase(ctx context.Context, client *http.Client, cfg VaultConfig, p phase, devs []Device) Result {
	if devs != nil {
		return runPhase(ctx, client, p, devs, cfg.Audience)
	}
	return runWorkers(ctx, p, func(w int) attemptFunc {
		seq := 0
		return func(ctx context.Context) outcome {
			seq++
			body := hmacBody(cfg.KVHub, "raw-"+strconv.Itoa(w), time.Now().Add(time.Hour).Unix()+int64(seq))
			return tryHMAC(ctx, client, p.url, cfg.VaultToken, body, p.timeout)
		}
	})
}

func hmacURL(cfg VaultConfig) string {
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

// tryHMAC is one POST to Vault's transit/hmac, classified like a token request.
func tryHMAC(ctx context.Context, client *http.Client, target, token string, body []byte, timeout time.Duration) outcome {
	return tryRequest(ctx, client, timeout, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("X-Vault-Token", token)
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	})
}

// probeHMAC checks once that the raw phase's token and key work and Vault answers an
// HMAC in the form tokensvc reads.
func probeHMAC(ctx context.Context, client *http.Client, cfg VaultConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hmacURL(cfg), bytes.NewReader(hmacBody(cfg.KVHub, "probe", time.Now().Unix())))
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", cfg.VaultToken)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe transit/hmac: %w", err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			HMAC string `json:"hmac"`
		} `json:"data"`
		Errors []string `json:"errors"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return fmt.Errorf("probe transit/hmac: status %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(r.Data.HMAC, "vault:v") {
		return fmt.Errorf("probe transit/hmac: status %d: %s", resp.StatusCode, strings.Join(r.Errors, "; "))
	}
	return nil
}

func printVault(w io.Writer, cfg VaultConfig, rep VaultReport) {
	fmt.Fprintf(w, "%d HS256 devices per hub, %d workers, %v per phase (warm-up %v), keep-alive; token response %d bytes\n\n",
		rep.Devices, cfg.Workers, cfg.Duration, cfg.Warmup, rep.BodyBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tok\treq/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\trefused\terrors\tconns\tcpu µs/req tool\tcpu µs/req tokensvc\tcpu µs/req vault\tvault reads\t")
	for _, r := range rep.Results {
		reads := "-"
		if r.VaultReads != nil {
			reads = fmt.Sprintf("%.0f", *r.VaultReads)
		}
		svc := "-"
		if r.ServerCPUPerReq > 0 && !strings.HasPrefix(r.Name, "vault") {
			svc = fmt.Sprintf("%.1f", us(r.ServerCPUPerReq))
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%d\t%.1f\t%s\t%s\t%s\t\n", r.Name, r.OK, r.Throughput,
			ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max), counts(r.Refusals), counts(r.Errors), r.NewConns,
			us(r.ClientCPUPerReq), svc, orNA(r.VaultCPUPerReq > 0, fmt.Sprintf("%.1f", us(r.VaultCPUPerReq))), reads)
	}
	tw.Flush()
	if rep.KVRatio > 0 {
		fmt.Fprintf(w, "\nratio tokensvc KV (cached) / raw transit/hmac: %.2f (target ≥ 20)\n", rep.KVRatio)
		fmt.Fprintf(w, "ratio tokensvc Transit / raw transit/hmac:     %.2f (target ≥ 0.8)\n", rep.TransitRatio)
	}
}
