// Package storm is `tokenbench storm`, the boot storm: every one of many ES256 devices
// (own P-256 key each, registered through one streaming POST /devices/import) does one
// GET /token over a new TLS connection with a fresh assertion, a bounded number at a
// time; 429/503 with Retry-After are honoured and counted as refusals. Optionally the
// same storm first hits a bare TLS handler in its own process. See BENCHMARKS.md.
package storm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// Config is one boot-storm run.
type Config struct {
	bench.Common
	Devices     int
	Hub         string
	CACert      string
	Insecure    bool
	MaxDuration time.Duration
	Baseline    bool
	TLSCert     string // for the baseline's TLS listener
	TLSKey      string
	PostQuantum bool
	CPUProfile  string
	// Profile fetches tokensvc's own profiles over its storm.
	Profile bench.Profiler
	// Certificate storms POST /token/certificate (hub in mode certificate) instead of
	// GET /token.
	Certificate bool
}

// Validate rejects storms that would be unbounded, off this machine or unverifiable.
func (c Config) Validate() error {
	if err := c.Common.Validate("https"); err != nil {
		return err
	}
	if err := c.NeedAdmin("storm"); err != nil {
		return err
	}
	if err := c.Profile.Validate(); err != nil {
		return err
	}
	switch {
	case c.Devices < 1 || c.Devices > 1_000_000:
		return errors.New("-devices: 1 to 1000000")
	case (c.CACert == "") == !c.Insecure:
		return errors.New("give exactly one of -cacert FILE or -insecure")
	case c.MaxDuration <= 0 || c.MaxDuration > 30*time.Minute:
		return errors.New("-max-duration: above 0 and at most 30m (every storm is time-bounded)")
	case c.Baseline && (c.TLSCert == "" || c.TLSKey == ""):
		return errors.New("-baseline needs -tls-cert and -tls-key for its TLS listener")
	}
	return nil
}

// ParseConfig reads the flags of `tokenbench storm` and validates them.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := bench.NewFlagSet("storm", stderr)
	c.Common.Register(fs, bench.Defaults{URL: "https://127.0.0.1:8443", Workers: 128,
		WorkerHelp: "devices connecting at once", PrefixStem: "storm", Metrics: true})
	fs.IntVar(&c.Devices, "devices", 50_000, "simulated ES256 devices, each registered through POST /devices/import and doing one GET /token")
	fs.StringVar(&c.Hub, "hub", "storm", "hub the devices belong to (created if absent)")
	fs.StringVar(&c.CACert, "cacert", "", "PEM CA (or self-signed certificate) the service's TLS certificate chains to")
	fs.BoolVar(&c.Insecure, "insecure", false, "do not verify the service's certificate (loopback only, instead of -cacert)")
	fs.DurationVar(&c.MaxDuration, "max-duration", 10*time.Minute, "stop each storm after this long, served or not")
	fs.BoolVar(&c.Baseline, "baseline", false, "first run the same storm against a bare TLS net/http handler in a child process (needs -tls-cert, -tls-key)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "certificate of the baseline's TLS listener (use the service's, so -cacert trusts both)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "key of -tls-cert")
	fs.BoolVar(&c.PostQuantum, "pq", false, "let the client offer Go's default hybrid post-quantum key exchange (X25519MLKEM768); default X25519 and P-256 only, like typical device TLS stacks")
	fs.BoolVar(&c.Certificate, "certificate", false, "make -hub an iothub hub in mode certificate and have each device POST a CSR (its P-256 key, made before the storm) to /token/certificate instead of GET /token")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write this tool's CPU profile during the tokensvc storm to this file (go tool pprof)")
	c.Profile.Register(fs)
	if err := c.Common.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Report is a whole storm run, as printed by -json.
type Report struct {
	Devices       int           `json:"devices"`
	Workers       int           `json:"workers"`
	BodyBytes     int           `json:"bodyBytes"`
	TLS           string        `json:"tls"`
	KeygenSeconds bench.Seconds `json:"keygenSeconds"`
	ImportSeconds bench.Seconds `json:"importSeconds"`
	// Results: the baseline first if there is one, then tokensvc.
	Results []Result `json:"results"`
	// Ratio is tokensvc devices/s over baseline devices/s; 0 without a baseline.
	Ratio       float64 `json:"ratio,omitempty"`
	ToolPeakRSS int64   `json:"toolPeakRssBytes"`
	// Breakdown splits tokensvc's server CPU per device (with a baseline only).
	Breakdown *Breakdown `json:"breakdown,omitempty"`
}

// Run is `tokenbench storm`: provision ES256 devices, optionally storm a bare TLS
// handler, then storm tokensvc, and report.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := ParseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	tlsCfg, err := clientTLSConfig(cfg.CACert, cfg.Insecure, cfg.PostQuantum)
	if err != nil {
		return err
	}
	// A keep-alive client for the operator API, the probe and the metrics.
	admin := bench.NewClient(4, tlsCfg.Clone(), nil)
	defer admin.CloseIdleConnections()

	rep := Report{Devices: cfg.Devices, Workers: cfg.Workers, TLS: describeTLS(cfg)}
	devs, probeDev, err := provision(ctx, admin, cfg, &rep)
	if err != nil {
		return err
	}
	probeJWT, err := probeDev.Sign(cfg.Audience, "probe-"+probeDev.ID+"-", 1, time.Now())
	if err != nil {
		return err
	}
	target, bodies := cfg.URL+"/token", []string(nil)
	var body []byte
	if cfg.Certificate {
		target = cfg.URL + "/token/certificate"
		if bodies, err = csrBodies(append(devs, probeDev)); err != nil {
			return err
		}
		body, err = probeCertificate(ctx, admin, target, probeJWT, bodies[len(devs)])
		bodies = bodies[:len(devs)]
	} else {
		body, err = bench.Probe(ctx, admin, target, probeJWT)
	}
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
		p := paramsFor(cfg, "tokensvc", target)
		p.bodies = bodies
		profiled := cfg.Profile.Start(ctx, http.DefaultClient, "storm", cfg.MaxDuration)
		r, err := measure(ctx, p, tlsCfg, devs, cfg.ServerPID, admin, cfg.MetricsURL)
		err = errors.Join(err, stopProfile(), profiled())
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
	}
	if len(rep.Results) == 2 {
		rep.Ratio = bench.Ratio(rep.Results[1].Throughput, rep.Results[0].Throughput)
		if rep.Breakdown, err = breakdown(rep, probeDev, cfg.Audience); err != nil {
			return err
		}
	}
	rep.ToolPeakRSS, _ = bench.PeakRSS(0)
	return cfg.Print(ctx, stdout, rep, func(w io.Writer) { printReport(w, rep) })
}

// provision generates cfg.Devices devices plus one for the probe and imports them all
// through the operator API; it records how long each step took.
func provision(ctx context.Context, client *http.Client, cfg Config, rep *Report) ([]bench.KeyDevice, bench.KeyDevice, error) {
	t0 := time.Now()
	devs, err := bench.GenerateKeyDevices(cfg.DevicePrefix, cfg.Devices+1)
	if err != nil {
		return nil, bench.KeyDevice{}, err
	}
	rep.KeygenSeconds = bench.Seconds(time.Since(t0))
	admin, err := bench.NewAdmin(cfg.URL, cfg.AdminToken, client)
	if err != nil {
		return nil, bench.KeyDevice{}, err
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	t1 := time.Now()
	if cfg.Certificate {
		if err := admin.EnsureCertificateHub(pctx, cfg.Hub); err != nil {
			return nil, bench.KeyDevice{}, err
		}
	}
	if err := admin.ProvisionES256(pctx, cfg.Hub, devs); err != nil {
		return nil, bench.KeyDevice{}, err
	}
	rep.ImportSeconds = bench.Seconds(time.Since(t1))
	return devs[:cfg.Devices], devs[cfg.Devices], nil
}

// paramsFor is the storm against target with cfg's bounds.
func paramsFor(cfg Config, name, target string) params {
	return params{name: name, url: target, workers: cfg.Workers, audience: cfg.Audience,
		deadline: cfg.MaxDuration, maxWait: cfg.MaxWait, timeout: cfg.Timeout}
}

// stormBaseline storms a bare TLS handler in a child process that answers every request
// with n bytes, so the TLS and HTTP cost of the storm alone is visible. With -pprof-url
// the child writes its own CPU profile beside tokensvc's (baseline.cpu.pprof), for
// go tool pprof -diff_base.
func stormBaseline(ctx context.Context, cfg Config, tlsCfg *tls.Config, devs []bench.KeyDevice, n int) (Result, error) {
	args := append([]string{"-tls-cert", cfg.TLSCert, "-tls-key", cfg.TLSKey}, cfg.Profile.BaselineArgs()...)
	base, pid, stop, err := bench.StartBaselineProcess(ctx, n, args...)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	return measure(ctx, paramsFor(cfg, "baseline", base+"/token"), tlsCfg, devs, pid, nil, "")
}

// measure runs one storm with a fresh client and measures CPU, peak RSS of pid (if
// > 0) and, with a metrics URL, the store reads it caused.
func measure(ctx context.Context, p params, tlsCfg *tls.Config, devs []bench.KeyDevice, pid int, scraper *http.Client, metricsURL string) (Result, error) {
	reads, err := bench.StartStoreReads(ctx, scraper, metricsURL)
	if err != nil {
		return Result{}, err
	}
	meter, err := bench.StartCPU(pid)
	if err != nil {
		return Result{}, err
	}
	var dials atomic.Int64
	r := runStorm(ctx, newClient(tlsCfg, &dials), p, devs)
	r.Connections = int(dials.Load())
	self, procs, err := meter.PerOp(r.Served)
	if err != nil {
		return r, err
	}
	r.ClientCPUPerDevice, r.ServerCPUPerDevice = self, procs[0]
	if pid > 0 {
		if r.ServerPeakRSS, err = bench.PeakRSS(pid); err != nil {
			return r, err
		}
	}
	r.StoreReads, err = reads.Delta(ctx)
	return r, err
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
