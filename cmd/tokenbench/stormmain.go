package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// StormReport is a whole storm run, as printed by -json.
type StormReport struct {
	Devices       int     `json:"devices"`
	Workers       int     `json:"workers"`
	BodyBytes     int     `json:"bodyBytes"`
	TLS           string  `json:"tls"`
	KeygenSeconds Seconds `json:"keygenSeconds"`
	ImportSeconds Seconds `json:"importSeconds"`
	// Results: the baseline first if there is one, then tokensvc.
	Results []StormResult `json:"results"`
	// Ratio is tokensvc devices/s over baseline devices/s; 0 without a baseline.
	Ratio       float64 `json:"ratio,omitempty"`
	ToolPeakRSS int64   `json:"toolPeakRssBytes"`
}

// storm runs `tokenbench storm`: provision ES256 devices, optionally storm a bare TLS
// handler, then storm tokensvc, and report.
func storm(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseStormConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	tlsCfg, err := stormTLSConfig(cfg.CACert, cfg.Insecure, cfg.PostQuantum)
	if err != nil {
		return err
	}
	admin := newTLSClient(tlsCfg.Clone())
	defer admin.CloseIdleConnections()

	rep := StormReport{Devices: cfg.Devices, Workers: cfg.Workers, TLS: describeTLS(cfg)}
	devs, probeDev, err := provisionStorm(ctx, admin, cfg, &rep)
	if err != nil {
		return err
	}
	probeJWT, err := signES256(probeDev, cfg.Audience, "probe-"+probeDev.ID, time.Now())
	if err != nil {
		return err
	}
	body, err := probe(ctx, admin, cfg.URL+"/token", probeJWT)
	if err != nil {
		return err
	}
	rep.BodyBytes = len(body)

	if cfg.Baseline {
		r, err := stormBaseline(ctx, cfg, tlsCfg, devs, len(body))
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
	}
	if ctx.Err() == nil {
		stopProfile, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return err
		}
		r, err := stormService(ctx, cfg, tlsCfg, admin, devs)
		if perr := stopProfile(); err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
	}
	if n := len(rep.Results); n == 2 && rep.Results[0].Throughput > 0 {
		rep.Ratio = rep.Results[1].Throughput / rep.Results[0].Throughput
	}
	rep.ToolPeakRSS, _ = peakRSS(0)
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printStorm(stdout, rep)
	return ctx.Err()
}

// provisionStorm generates cfg.Devices devices plus one for the probe and imports them
// all; it records how long each step took.
func provisionStorm(ctx context.Context, admin *http.Client, cfg StormConfig, rep *StormReport) ([]keyDevice, keyDevice, error) {
	t0 := time.Now()
	devs, err := generateKeyDevices(cfg.DevicePrefix, cfg.Devices+1)
	if err != nil {
		return nil, keyDevice{}, err
	}
	rep.KeygenSeconds = Seconds(time.Since(t0))
	pctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	t1 := time.Now()
	if err := ensureHub(pctx, admin, cfg.URL, cfg.AdminToken, cfg.Hub, false); err != nil {
		return nil, keyDevice{}, err
	}
	if err := importKeyDevices(pctx, admin, cfg.URL, cfg.AdminToken, cfg.Hub, devs); err != nil {
		return nil, keyDevice{}, err
	}
	rep.ImportSeconds = Seconds(time.Since(t1))
	return devs[:cfg.Devices], devs[cfg.Devices], nil
}

// stormParamsFor is the storm against target with cfg's bounds.
func stormParamsFor(cfg StormConfig, name, target string) stormParams {
	return stormParams{name: name, url: target, workers: cfg.Workers, audience: cfg.Audience,
		deadline: cfg.MaxDuration, maxWait: cfg.MaxWait, timeout: cfg.Timeout}
}

// stormBaseline storms a bare TLS handler in a child process that answers every request
// with n bytes, so the TLS and HTTP cost of the storm alone is visible.
func stormBaseline(ctx context.Context, cfg StormConfig, tlsCfg *tls.Config, devs []keyDevice, n int) (StormResult, error) {
	base, pid, stop, err := startBaselineProcess(ctx, n, "-tls-cert", cfg.TLSCert, "-tls-key", cfg.TLSKey)
	if err != nil {
		return StormResult{}, err
	}
	defer stop()
	return measureStorm(ctx, stormParamsFor(cfg, "baseline", base+"/token"), tlsCfg, devs, pid, nil, "")
}

// stormService storms tokensvc, with its store-read counters scraped around the storm.
func stormService(ctx context.Context, cfg StormConfig, tlsCfg *tls.Config, admin *http.Client, devs []keyDevice) (StormResult, error) {
	return measureStorm(ctx, stormParamsFor(cfg, "tokensvc", cfg.URL+"/token"), tlsCfg, devs, cfg.ServerPID, admin, cfg.MetricsURL)
}

// measureStorm runs one storm with a fresh client and measures CPU, peak RSS of pid (if
// > 0) and, with a metrics URL, the store reads it caused.
func measureStorm(ctx context.Context, p stormParams, tlsCfg *tls.Config, devs []keyDevice, pid int, scraper *http.Client, metricsURL string) (StormResult, error) {
	var before map[string]float64
	if metricsURL != "" {
		var err error
		if before, err = scrapeCounters(ctx, scraper, metricsURL, storeReadMetrics); err != nil {
			return StormResult{}, err
		}
	}
	var srv0 time.Duration
	if pid > 0 {
		var err error
		if srv0, err = procCPU(pid); err != nil {
			return StormResult{}, err
		}
	}
	self0 := selfCPU()
	var dials atomic.Int64
	client := newStormClient(tlsCfg, &dials)
	r := runStorm(ctx, client, p, devs)
	r.Connections = int(dials.Load())
	if r.Served > 0 {
		r.ClientCPUPerDevice = Micros((selfCPU() - self0) / time.Duration(r.Served))
	}
	if pid > 0 {
		srv1, err := procCPU(pid)
		if err != nil {
			return r, err
		}
		if r.Served > 0 {
			r.ServerCPUPerDevice = Micros((srv1 - srv0) / time.Duration(r.Served))
		}
		if r.ServerPeakRSS, err = peakRSS(pid); err != nil {
			return r, err
		}
	}
	if metricsURL != "" {
		after, err := scrapeCounters(ctx, scraper, metricsURL, storeReadMetrics)
		if err != nil {
			return r, err
		}
		r.StoreReads = counterDelta(before, after)
	}
	return r, nil
}

// startCPUProfile profiles this process into file until the returned function is
// called; with no file it does nothing.
func startCPUProfile(file string) (func() error, error) {
	if file == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// newTLSClient is a keep-alive HTTPS client for the operator API, the probe and metrics.
func newTLSClient(tlsCfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     tlsCfg,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}}
}

func describeTLS(cfg StormConfig) string {
	kx := "X25519/P-256 key exchange"
	if cfg.PostQuantum {
		kx = "Go default key exchange (X25519MLKEM768 first)"
	}
	verify := "server certificate verified against -cacert"
	if cfg.Insecure {
		verify = "server certificate NOT verified (-insecure)"
	}
	return "new TCP + TLS connection per exchange, no keep-alive, no session resumption, HTTP/1.1, " + kx + ", " + verify
}

func printStorm(w io.Writer, rep StormReport) {
	fmt.Fprintf(w, "boot storm: %d ES256 devices, %d at once, response body %d bytes\n", rep.Devices, rep.Workers, rep.BodyBytes)
	fmt.Fprintf(w, "TLS: %s\n", rep.TLS)
	fmt.Fprintf(w, "provisioning: %d P-256 keys generated in %.1f s, imported (one streaming POST /devices/import) in %.1f s\n\n",
		rep.Devices+1, time.Duration(rep.KeygenSeconds).Seconds(), time.Duration(rep.ImportSeconds).Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t", r.Name)
	}
	fmt.Fprintln(tw)
	row := func(label string, f func(StormResult) string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, r := range rep.Results {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	row("devices served", func(r StormResult) string { return fmt.Sprintf("%d of %d", r.Served, r.Devices) })
	row("failed (error)", func(r StormResult) string { return fmt.Sprint(r.Failed) })
	row("unfinished at deadline", func(r StormResult) string { return fmt.Sprint(r.Unfinished) })
	row("time to serve all, s", func(r StormResult) string { return fmt.Sprintf("%.2f", time.Duration(r.Elapsed).Seconds()) })
	row("throughput, devices/s", func(r StormResult) string { return fmt.Sprintf("%.0f", r.Throughput) })
	row("exchange p50 / p95 / p99 / max, ms", func(r StormResult) string {
		return fmt.Sprintf("%.2f / %.2f / %.2f / %.1f", ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max))
	})
	row("device completion p50 / p99 / max, ms", func(r StormResult) string {
		return fmt.Sprintf("%.2f / %.2f / %.1f", ms(r.DeviceP50), ms(r.DeviceP99), ms(r.DeviceMax))
	})
	row("attempts", func(r StormResult) string { return fmt.Sprint(r.Attempts) })
	row("refused (429/503 + Retry-After)", func(r StormResult) string { return counts(r.Refusals) })
	row("errors", func(r StormResult) string { return counts(r.Errors) })
	row("TCP+TLS connections / resumed", func(r StormResult) string { return fmt.Sprintf("%d / %d", r.Connections, r.Resumed) })
	row("CPU µs per device, tool", func(r StormResult) string { return fmt.Sprintf("%.0f", us(r.ClientCPUPerDevice)) })
	row("CPU µs per device, server", func(r StormResult) string {
		return orNA(r.ServerCPUPerDevice > 0, fmt.Sprintf("%.0f", us(r.ServerCPUPerDevice)))
	})
	row("server peak RSS (VmHWM), MiB", func(r StormResult) string {
		return orNA(r.ServerPeakRSS > 0, fmt.Sprintf("%.1f", mib(r.ServerPeakRSS)))
	})
	row("store reads during the storm", func(r StormResult) string { return storeReads(r.StoreReads) })
	tw.Flush()
	fmt.Fprintf(w, "\ntool peak RSS (VmHWM): %.1f MiB\n", mib(rep.ToolPeakRSS))
	if rep.Ratio > 0 {
		fmt.Fprintf(w, "throughput tokensvc/baseline: %.2f\n", rep.Ratio)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func orNA(ok bool, s string) string {
	if ok {
		return s
	}
	return "n/a"
}

// storeReads renders the store-read counters: the Vault key cache's backend reads if
// the service has that cache, else the store's device and hub reads.
func storeReads(m map[string]float64) string {
	if m == nil {
		return "n/a"
	}
	if v, ok := m["tokensvc_key_cache_backend_reads_total"]; ok {
		return fmt.Sprintf("%.0f Vault reads (key cache misses)", v)
	}
	var parts []string
	for _, k := range []string{`tokensvc_store_operation_duration_seconds_count{op="get_device"}`, `tokensvc_store_operation_duration_seconds_count{op="get_hub"}`} {
		if v, ok := m[k]; ok {
			op := strings.TrimSuffix(strings.TrimPrefix(k, `tokensvc_store_operation_duration_seconds_count{op="`), `"}`)
			parts = append(parts, fmt.Sprintf("%s×%.0f", op, v))
		}
	}
	if len(parts) == 0 {
		return "n/a"
	}
	return "Vault n/a (no key cache); store " + strings.Join(parts, " ")
}
