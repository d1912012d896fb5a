// Package vault is `tokenbench vault`: tokensvc on the Vault store, GET /token
// keep-alive HS256 for devices on a KV hub (keys cached by tokensvc) and on a Transit
// hub (every token signed by Vault's transit/hmac), against Vault's own transit/hmac
// driven directly by the same workers. See BENCHMARKS.md.
package vault

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// Config is one `tokenbench vault` run.
type Config struct {
	bench.Common
	bench.Phases
	VaultAddr    string
	TransitMount string
	TransitKey   string
	Provision    int
	KVHub        string
	TransitHub   string
	VaultPID     int
	VaultToken   string
	// TransitMode is the Transit hub's signing mode: policy (one hub key for every
	// device, so concurrent tokens share Transit batches) or deviceKey (a Transit key
	// per device: concurrent tokens of different devices cannot share a call).
	TransitMode string
	// Profile fetches tokensvc's CPU and alloc profiles over each tokensvc phase
	// (kv.*.pprof, transit.*.pprof).
	Profile bench.Profiler
	// VaultPprofToken (VAULT_PPROF_TOKEN), with -pprof-url, also fetches Vault's own
	// CPU profile (sys/pprof, which needs a root or sudo token) over every phase, as
	// vault.kv, vault.raw and vault.transit .cpu.pprof.
	VaultPprofToken string
}

var vaultName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Validate rejects runs that would be unbounded or leave this machine.
func (c Config) Validate() error {
	if err := c.Common.Validate("http", "https"); err != nil {
		return err
	}
	if err := bench.CheckLoopbackURL("-vault-addr", c.VaultAddr, "http", "https"); err != nil {
		return err
	}
	if err := c.Phases.Validate(); err != nil {
		return err
	}
	if err := c.Profile.Validate(); err != nil {
		return err
	}
	if err := c.NeedAdmin("vault"); err != nil {
		return err
	}
	switch {
	case c.VaultToken == "":
		return errors.New("the raw transit/hmac phase needs VAULT_TOKEN (a token that may use transit/hmac on -transit-key)")
	case !vaultName.MatchString(c.TransitKey) || !vaultName.MatchString(c.TransitMount):
		return errors.New("-transit-key and -transit-mount: letters, digits, '_', '.', '-'")
	case c.Provision < 1 || c.Provision > 10_000:
		return errors.New("-provision: 1 to 10000 devices per hub")
	case c.KVHub == "" || c.TransitHub == "" || c.KVHub == c.TransitHub:
		return errors.New("-kv-hub and -transit-hub: two different hub names")
	case c.TransitMode != "policy" && c.TransitMode != "deviceKey":
		return errors.New("-transit-mode: policy or deviceKey")
	}
	return nil
}

// ParseConfig reads the flags of `tokenbench vault` and validates them.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := bench.NewFlagSet("vault", stderr)
	c.Common.Register(fs, bench.Defaults{URL: "http://127.0.0.1:8080", Workers: 32,
		WorkerHelp: "concurrent workers (each a keep-alive connection), the same in every phase", PrefixStem: "vault", Metrics: true})
	c.Phases.Register(fs)
	fs.StringVar(&c.VaultAddr, "vault-addr", "http://127.0.0.1:8200", "Vault's address, the one tokensvc uses (loopback only)")
	fs.StringVar(&c.TransitMount, "transit-mount", "transit", "Transit mount of -transit-key")
	fs.StringVar(&c.TransitKey, "transit-key", "bench-raw", "Transit key (type hmac) the raw phase computes HMACs with")
	fs.IntVar(&c.Provision, "provision", 200, "HS256 devices to create on each hub")
	fs.StringVar(&c.KVHub, "kv-hub", "bench-kv", "hub whose keys live in KV (created if absent)")
	fs.StringVar(&c.TransitHub, "transit-hub", "bench-transit", "hub whose keys live in Transit (created with transit: true if absent)")
	fs.StringVar(&c.TransitMode, "transit-mode", "policy", "signing mode of -transit-hub: policy (one Transit key for the hub's devices) or deviceKey (one per device)")
	fs.IntVar(&c.VaultPID, "vault-pid", 0, "report Vault's CPU per request, from /proc")
	c.Profile.Register(fs)
	if err := c.Common.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	c.VaultAddr = strings.TrimRight(c.VaultAddr, "/")
	c.VaultToken = getenv("VAULT_TOKEN")
	c.VaultPprofToken = getenv("VAULT_PPROF_TOKEN")
	return c, c.Validate()
}

// Result is one phase of a vault run.
type Result struct {
	bench.Result
	// VaultCPUPerReq is Vault's CPU time per successful request (-vault-pid).
	VaultCPUPerReq bench.Micros `json:"vaultCpuUsPerRequest,omitempty"`
	// VaultReads is how many reads tokensvc's key cache made to Vault in the phase
	// (absent: not measured, or not a tokensvc phase).
	VaultReads *float64 `json:"vaultReads,omitempty"`
}

// Report is a whole vault run, as printed by -json.
type Report struct {
	Devices   int      `json:"devicesPerHub"`
	BodyBytes int      `json:"bodyBytes"`
	Results   []Result `json:"results"`
	// KVRatio is tokensvc (KV, cached) / raw transit/hmac throughput (target ≥ 20).
	KVRatio float64 `json:"kvOverRawTransit,omitempty"`
	// TransitRatio is tokensvc (Transit hub) / raw transit/hmac throughput (target ≥ 2
	// with a policy hub, whose tokens share Transit batches).
	TransitRatio float64 `json:"transitOverRawTransit,omitempty"`
	// TransitMode is the Transit hub's signing mode (-transit-mode).
	TransitMode string `json:"transitMode,omitempty"`
	// TransitVaultCPURatio is Vault's CPU per token on the Transit hub / per raw
	// transit/hmac call (target ≤ 0.25; needs -vault-pid).
	TransitVaultCPURatio float64 `json:"transitVaultCpuOverRawTransit,omitempty"`
	// TransitP99Ratio is the Transit hub's p99 latency / the raw call's (target ≤ 1).
	TransitP99Ratio float64 `json:"transitP99OverRawTransit,omitempty"`
}

// Run is `tokenbench vault`.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := ParseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	client := bench.NewKeepAlive(cfg.Workers)
	defer client.CloseIdleConnections()

	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	kvDevs, trDevs, err := provisionHubs(pctx, client.Client, cfg)
	cancel()
	if err != nil {
		return err
	}
	body, err := bench.ProbeDevice(ctx, client.Client, cfg.URL, cfg.Audience, kvDevs[0])
	if err != nil {
		return err
	}
	if _, err := bench.ProbeDevice(ctx, client.Client, cfg.URL, cfg.Audience, trDevs[0]); err != nil {
		return fmt.Errorf("transit hub: %w", err)
	}
	if err := probeHMAC(ctx, client.Client, cfg); err != nil {
		return err
	}

	rep := Report{Devices: cfg.Provision, BodyBytes: len(body), TransitMode: cfg.TransitMode}
	phases := []struct {
		name    string
		profile string         // the profiles' file stem
		devices []bench.Device // nil: the raw transit/hmac phase
	}{
		{"tokensvc KV (cached)", "kv", kvDevs},
		{"vault transit/hmac", "raw", nil},
		{"tokensvc Transit " + cfg.TransitMode, "transit", trDevs},
	}
	for _, ph := range phases {
		r, err := measurePhase(ctx, client, cfg, ph.name, ph.profile, ph.devices)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if len(rep.Results) == 3 {
		rep.KVRatio = bench.Ratio(rep.Results[0].Throughput, rep.Results[1].Throughput)
		raw, tr := rep.Results[1], rep.Results[2]
		rep.TransitRatio = bench.Ratio(tr.Throughput, raw.Throughput)
		rep.TransitVaultCPURatio = bench.Ratio(float64(tr.VaultCPUPerReq), float64(raw.VaultCPUPerReq))
		rep.TransitP99Ratio = bench.Ratio(float64(tr.P99), float64(raw.P99))
	}
	return cfg.Print(ctx, stdout, rep, func(w io.Writer) { printReport(w, cfg, rep) })
}

// provisionHubs creates the KV hub, the Transit hub (transit: true) and cfg.Provision
// HS256 devices on each.
func provisionHubs(ctx context.Context, client *http.Client, cfg Config) (kv, tr []bench.Device, err error) {
	admin, err := bench.NewAdmin(cfg.URL, cfg.AdminToken, client)
	if err != nil {
		return nil, nil, err
	}
	kv, err = admin.ProvisionHS256(ctx, cfg.KVHub, cfg.DevicePrefix+"kv-", cfg.Provision)
	if err != nil {
		return nil, nil, fmt.Errorf("KV hub: %w", err)
	}
	// The Transit hub exists first with transit: true; ProvisionHS256 then leaves it.
	if cfg.TransitMode == "policy" {
		var key [32]byte
		_, _ = rand.Read(key[:]) // crypto/rand.Read never fails (Go 1.24+)
		err = admin.EnsurePolicyHub(ctx, cfg.TransitHub, true, "bench", base64.StdEncoding.EncodeToString(key[:]))
	} else {
		err = admin.EnsureHub(ctx, cfg.TransitHub, true)
	}
	if err != nil {
		return nil, nil, err
	}
	tr, err = admin.ProvisionHS256(ctx, cfg.TransitHub, cfg.DevicePrefix+"tr-", cfg.Provision)
	if err != nil {
		return nil, nil, fmt.Errorf("Transit hub: %w", err)
	}
	return kv, tr, nil
}

// measurePhase warms up, then measures one phase with tokensvc's and Vault's CPU and,
// for a tokensvc phase, tokensvc's Vault reads around it and (with -pprof-url) its
// profiles, named after profile.
func measurePhase(ctx context.Context, client *bench.KeepAlive, cfg Config, name, profile string, devs []bench.Device) (Result, error) {
	target := cfg.URL + "/token"
	metrics := cfg.MetricsURL
	if devs == nil {
		target, metrics = hmacURL(cfg), ""
	}
	p := cfg.Phase(name, target, cfg.Phases)
	run := func(ctx context.Context, p bench.Phase) bench.Result {
		return runPhase(ctx, client.Client, cfg, p, devs)
	}
	bench.WarmUp(ctx, p, cfg.Warmup, run)
	reads, err := bench.StartStoreReads(ctx, client.Client, metrics)
	if err != nil {
		return Result{}, err
	}
	profiled, vaultProfiled := func() error { return nil }, func() error { return nil }
	if devs != nil {
		profiled = cfg.Profile.Start(ctx, http.DefaultClient, profile, cfg.Duration)
	}
	if cfg.Profile.URL != "" && cfg.VaultPprofToken != "" {
		vaultProfiled = cfg.Profile.StartCPU(ctx, http.DefaultClient, cfg.VaultAddr+"/v1/sys/pprof/profile",
			http.Header{"X-Vault-Token": {cfg.VaultPprofToken}}, "vault."+profile, cfg.Duration)
	}
	br, cpu, err := bench.Measure(ctx, p, client, run, cfg.ServerPID, cfg.VaultPID)
	err = errors.Join(err, profiled(), vaultProfiled())
	r := Result{Result: br}
	if err != nil || r.OK == 0 {
		return r, err
	}
	r.ServerCPUPerReq, r.VaultCPUPerReq = cpu[0], cpu[1]
	d, err := reads.Delta(ctx)
	if err != nil {
		return r, err
	}
	if v, ok := d[bench.KeyCacheReads]; ok {
		r.VaultReads = &v
	}
	return r, nil
}

func printReport(w io.Writer, cfg Config, rep Report) {
	fmt.Fprintf(w, "%d HS256 devices per hub, %d workers, %v per phase (warm-up %v), keep-alive; token response %d bytes\n\n",
		rep.Devices, cfg.Workers, cfg.Duration, cfg.Warmup, rep.BodyBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, bench.ResultHeader+"\tcpu µs/req tool\tcpu µs/req tokensvc\tcpu µs/req vault\tvault reads\t")
	for _, r := range rep.Results {
		reads := "-"
		if r.VaultReads != nil {
			reads = fmt.Sprintf("%.0f", *r.VaultReads)
		}
		svc := "-"
		if !strings.HasPrefix(r.Name, "vault") {
			svc = bench.CPUColumn(r.ServerCPUPerReq, "-")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", bench.ResultColumns(r.Result), bench.CPUColumn(r.ClientCPUPerReq, "0.0"),
			svc, bench.CPUColumn(r.VaultCPUPerReq, "n/a"), reads)
	}
	tw.Flush()
	if rep.KVRatio > 0 {
		fmt.Fprintf(w, "\nratio tokensvc KV (cached) / raw transit/hmac: %.2f (target ≥ 20)\n", rep.KVRatio)
		fmt.Fprintf(w, "ratio tokensvc Transit (%s) / raw transit/hmac: %.2f (target ≥ 2 with policy)\n", rep.TransitMode, rep.TransitRatio)
		fmt.Fprintf(w, "Vault CPU per token, Transit / raw:           %.2f (target ≤ 0.25)\n", rep.TransitVaultCPURatio)
		fmt.Fprintf(w, "p99, Transit / raw:                           %.2f (target ≤ 1)\n", rep.TransitP99Ratio)
	}
}
