// Package load is `tokenbench load`: many simulated HS256 devices drive GET /token of a
// running tokensvc on loopback — a fresh assertion per request over keep-alive
// connections — and, in the same run, a bare net/http handler that returns a body of
// the same size; it reports throughput, p50/p95/p99 latency, deliberate refusals
// (429/503 with Retry-After, which it honours) and errors by status, with the ratio
// tokensvc/baseline. See BENCHMARKS.md.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// Config is everything one run needs; flags only, the admin token from the environment.
type Config struct {
	bench.Common
	bench.Phases
	Provision    int
	DevicesFile  string
	Hub          string
	Baseline     bool
	BaselineProc bool
	Profile      bench.Profiler
}

// Validate rejects settings that would make an unbounded or off-machine run.
func (c Config) Validate() error {
	if err := c.Common.Validate("http"); err != nil {
		return err
	}
	if err := c.Phases.Validate(); err != nil {
		return err
	}
	if err := c.Profile.Validate(); err != nil {
		return err
	}
	switch {
	case (c.Provision > 0) == (c.DevicesFile != ""):
		return errors.New("give exactly one of -provision N or -devices FILE")
	case c.Provision > 0 && c.AdminToken == "":
		return errors.New("-provision needs TOKENSVC_ADMIN_TOKEN")
	case c.Provision > 1_000_000:
		return errors.New("-provision: at most 1000000 devices")
	}
	return nil
}

// ParseConfig reads the flags of `tokenbench load` and validates them.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := bench.NewFlagSet("load", stderr)
	c.Common.Register(fs, bench.Defaults{URL: "http://127.0.0.1:8080", Workers: 32,
		WorkerHelp: "concurrent workers (each a keep-alive connection)", PrefixStem: "bench"})
	c.Phases.Register(fs)
	fs.IntVar(&c.Provision, "provision", 0, "create this many HS256 devices through the operator API (TOKENSVC_ADMIN_TOKEN)")
	fs.StringVar(&c.DevicesFile, "devices", "", "read devices instead: an import report (NDJSON with deviceId and auth.secret), NDJSON {deviceId,secret}, or CSV with deviceId,secret columns")
	fs.StringVar(&c.Hub, "hub", "bench", "hub the provisioned devices belong to (created if absent)")
	fs.BoolVar(&c.Baseline, "baseline", true, "also measure a bare net/http handler with a body of the same size, in this process")
	fs.BoolVar(&c.BaselineProc, "baseline-process", false, "run the baseline handler in a child process (like tokensvc) instead of in this one, and report its CPU per request")
	c.Profile.Register(fs)
	if err := c.Common.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Report is the whole run, as printed by -json.
type Report struct {
	Devices   int            `json:"devices"`
	BodyBytes int            `json:"bodyBytes"`
	Results   []bench.Result `json:"results"`
	// Ratio is tokensvc throughput / baseline throughput; 0 without a baseline.
	Ratio float64 `json:"ratio,omitempty"`
}

// Run is `tokenbench load`.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := ParseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	client := bench.NewKeepAlive(cfg.Workers)
	defer client.CloseIdleConnections()

	devices, err := devicesFor(ctx, client.Client, cfg)
	if err != nil {
		return err
	}
	body, err := bench.ProbeDevice(ctx, client.Client, cfg.URL, cfg.Audience, devices[0])
	if err != nil {
		return err
	}
	rep := Report{Devices: len(devices), BodyBytes: len(body)}

	type target struct {
		name, url string
		pid       int
	}
	targets := []target{{"tokensvc", cfg.URL + "/token", cfg.ServerPID}}
	if cfg.Baseline {
		base, pid, stop, err := startBaseline(ctx, cfg, len(body))
		if err != nil {
			return err
		}
		defer stop()
		targets = append([]target{{"baseline", base + "/token", pid}}, targets...)
	}
	run := func(ctx context.Context, p bench.Phase) bench.Result {
		return bench.TokenPhase(ctx, client.Client, p, devices, cfg.Audience)
	}
	for _, t := range targets {
		p := cfg.Phase(t.name, t.url, cfg.Phases)
		bench.WarmUp(ctx, p, cfg.Warmup, run)
		profiled := func() error { return nil }
		if t.name == "tokensvc" {
			profiled = cfg.Profile.Start(ctx, http.DefaultClient, t.name, cfg.Duration)
		}
		r, cpu, err := bench.Measure(ctx, p, client, run, t.pid)
		err = errors.Join(err, profiled())
		if err != nil {
			return err
		}
		r.BodyBytes, r.ServerCPUPerReq = len(body), cpu[0]
		rep.Results = append(rep.Results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if len(rep.Results) == 2 {
		rep.Ratio = bench.Ratio(rep.Results[1].Throughput, rep.Results[0].Throughput)
	}
	return cfg.Print(ctx, stdout, rep, func(w io.Writer) { printTable(w, cfg, rep) })
}

// devicesFor reads cfg.DevicesFile or provisions cfg.Provision devices.
func devicesFor(ctx context.Context, client *http.Client, cfg Config) ([]bench.Device, error) {
	if cfg.DevicesFile != "" {
		return bench.LoadDevices(cfg.DevicesFile)
	}
	admin, err := bench.NewAdmin(cfg.URL, cfg.AdminToken, client)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return admin.ProvisionHS256(ctx, cfg.Hub, cfg.DevicePrefix, cfg.Provision)
}

// startBaseline starts the baseline with a body of n bytes, in this process or in a
// child (whose pid it returns, else 0; it profiles itself when tokensvc is profiled).
func startBaseline(ctx context.Context, cfg Config, n int) (url string, pid int, stop func(), err error) {
	if cfg.BaselineProc {
		return bench.StartBaselineProcess(ctx, n, cfg.Profile.BaselineArgs()...)
	}
	url, stop, err = bench.StartBaseline("127.0.0.1:0", n, nil)
	return url, 0, stop, err
}

func printTable(w io.Writer, cfg Config, rep Report) {
	fmt.Fprintf(w, "devices %d, workers %d, duration %v per phase (warm-up %v), response body %d bytes\n\n",
		rep.Devices, cfg.Workers, cfg.Duration, cfg.Warmup, rep.BodyBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, bench.ResultHeader+"\tcpu µs/req tool\tcpu µs/req server\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", bench.ResultColumns(r), bench.CPUColumn(r.ClientCPUPerReq, "0.0"), bench.CPUColumn(r.ServerCPUPerReq, "-"))
	}
	tw.Flush()
	if rep.Ratio > 0 {
		verdict := "below"
		if rep.Ratio >= 0.6 {
			verdict = "meets"
		}
		fmt.Fprintf(w, "\nratio tokensvc/baseline: %.2f (%s the DESIGN §6 bar of ≥ 0.60)\n", rep.Ratio, verdict)
	}
}
