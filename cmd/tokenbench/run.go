package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

// Config is everything one run needs; flags only, the admin token from the environment.
type Config struct {
	URL          string
	Provision    int
	DevicesFile  string
	Hub          string
	DevicePrefix string
	Audience     string
	Workers      int
	Duration     time.Duration
	Requests     int
	Warmup       time.Duration
	Baseline     bool
	MaxWait      time.Duration
	Timeout      time.Duration
	JSON         bool
	ServerPID    int
	BaselineProc bool
	AdminToken   string
}

// Validate rejects settings that would make an unbounded or off-machine run.
func (c Config) Validate() error {
	if err := checkLoopbackURL("-url", c.URL, "http"); err != nil {
		return err
	}
	switch {
	case (c.Provision > 0) == (c.DevicesFile != ""):
		return errors.New("give exactly one of -provision N or -devices FILE")
	case c.Provision > 0 && c.AdminToken == "":
		return errors.New("-provision needs TOKENSVC_ADMIN_TOKEN")
	case c.Provision > 1_000_000:
		return errors.New("-provision: at most 1000000 devices")
	case c.Workers < 1 || c.Workers > 10_000:
		return errors.New("-c: 1 to 10000 workers")
	case c.Duration <= 0 || c.Duration > 10*time.Minute:
		return errors.New("-d: a duration above 0 and at most 10m (every run is time-bounded; latencies are kept in memory)")
	case c.Requests < 0, c.Warmup < 0, c.Warmup > time.Minute:
		return errors.New("-n must be ≥ 0 and -warmup within 0..1m")
	case c.MaxWait <= 0 || c.Timeout <= 0:
		return errors.New("-max-wait and -timeout must be positive")
	}
	return nil
}

// checkLoopbackURL accepts raw (the value of flag) only as a URL with one of schemes
// whose host is this machine: the tool never loads anything else.
func checkLoopbackURL(flag, raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return fmt.Errorf("%s %q: want %s://<loopback>:<port>", flag, raw, strings.Join(schemes, " or "))
	}
	if !isLoopback(u.Hostname()) {
		return fmt.Errorf("%s %q: only loopback targets are allowed", flag, raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("tokenbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "tokensvc base URL (loopback only)")
	fs.IntVar(&c.Provision, "provision", 0, "create this many HS256 devices through the operator API (TOKENSVC_ADMIN_TOKEN)")
	fs.StringVar(&c.DevicesFile, "devices", "", "read devices instead: an import report (NDJSON with deviceId and auth.secret), NDJSON {deviceId,secret}, or CSV with deviceId,secret columns")
	fs.StringVar(&c.Hub, "hub", "bench", "hub the provisioned devices belong to (created if absent)")
	fs.StringVar(&c.DevicePrefix, "device-prefix", "", "device ID prefix for -provision (default: bench-<time>-)")
	fs.StringVar(&c.Audience, "audience", "tokensvc", "aud of the assertions (TOKENSVC_AUDIENCE of the service)")
	fs.IntVar(&c.Workers, "c", 32, "concurrent workers (each a keep-alive connection)")
	fs.DurationVar(&c.Duration, "d", 15*time.Second, "measured duration of each phase")
	fs.IntVar(&c.Requests, "n", 0, "also stop each phase after this many requests (0: duration only)")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "unmeasured load before each phase")
	fs.BoolVar(&c.Baseline, "baseline", true, "also measure a bare net/http handler with a body of the same size, in this process")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Second, "longest Retry-After honoured before retrying")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	fs.BoolVar(&c.BaselineProc, "baseline-process", false, "run the baseline handler in a child process (like tokensvc) instead of in this one, and report its CPU per request")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "also report this process's (tokensvc's) CPU time per request, from /proc")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.URL = strings.TrimRight(c.URL, "/")
	c.AdminToken = getenv("TOKENSVC_ADMIN_TOKEN")
	if c.DevicePrefix == "" {
		c.DevicePrefix = fmt.Sprintf("bench-%d-", time.Now().Unix())
	}
	return c, c.Validate()
}

// Report is the whole run, as printed by -json.
type Report struct {
	Devices   int      `json:"devices"`
	BodyBytes int      `json:"bodyBytes"`
	Results   []Result `json:"results"`
	// Ratio is tokensvc throughput / baseline throughput; 0 without a baseline.
	Ratio float64 `json:"ratio,omitempty"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "freeport" {
		return printFreePort(stdout)
	}
	if len(args) > 0 {
		switch args[0] {
		case "serve-baseline":
			return serveBaseline(ctx, args[1:], stdout, stderr)
		case "selfsigned":
			return selfSigned(args[1:], stderr)
		case "storm":
			return storm(ctx, args[1:], getenv, stdout, stderr)
		case "vault":
			return vaultBench(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	var dials atomic.Int64
	client := newClient(cfg.Workers, &dials)
	defer client.CloseIdleConnections()

	var devices []Device
	if cfg.DevicesFile != "" {
		devices, err = loadDevices(cfg.DevicesFile)
	} else {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		devices, err = provision(pctx, client, cfg.URL, cfg.AdminToken, cfg.Hub, cfg.DevicePrefix, cfg.Provision)
		cancel()
	}
	if err != nil {
		return err
	}

	// One real exchange first: it proves the setup works and sizes the baseline's body.
	body, err := probe(ctx, client, cfg.URL+"/token", newSigner(cfg.Audience, "probe-").sign(devices[0], time.Now()))
	if err != nil {
		return err
	}
	rep := Report{Devices: len(devices), BodyBytes: len(body)}
	baselinePID := 0

	targets := []struct{ name, url string }{{"tokensvc", cfg.URL + "/token"}}
	if cfg.Baseline {
		var base string
		var stop func()
		if cfg.BaselineProc {
			base, baselinePID, stop, err = startBaselineProcess(ctx, len(body))
		} else {
			base, stop, err = startBaseline("127.0.0.1:0", len(body), nil)
		}
		if err != nil {
			return err
		}
		defer stop()
		targets = append([]struct{ name, url string }{{"baseline", base + "/token"}}, targets...)
	}
	for _, t := range targets {
		p := phase{name: t.name, url: t.url, workers: cfg.Workers, duration: cfg.Warmup, maxWait: cfg.MaxWait, timeout: cfg.Timeout}
		if cfg.Warmup > 0 {
			runPhase(ctx, client, p, devices, cfg.Audience)
		}
		p.duration, p.requests = cfg.Duration, cfg.Requests
		dials0, self0 := dials.Load(), selfCPU()
		pid := cfg.ServerPID
		if t.name == "baseline" {
			pid = baselinePID
		}
		var srv0 time.Duration
		if pid > 0 {
			if srv0, err = procCPU(pid); err != nil {
				return err
			}
		}
		r := runPhase(ctx, client, p, devices, cfg.Audience)
		r.BodyBytes = len(body)
		r.NewConns = int(dials.Load() - dials0)
		if r.OK > 0 {
			r.ClientCPUPerReq = Micros((selfCPU() - self0) / time.Duration(r.OK))
			if pid > 0 {
				srv1, err := procCPU(pid)
				if err != nil {
					return err
				}
				r.ServerCPUPerReq = Micros((srv1 - srv0) / time.Duration(r.OK))
			}
		}
		rep.Results = append(rep.Results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if len(rep.Results) == 2 && rep.Results[0].Throughput > 0 {
		rep.Ratio = rep.Results[1].Throughput / rep.Results[0].Throughput
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printTable(stdout, cfg, rep)
	return ctx.Err()
}

// newClient is a keep-alive client with room for every worker's connection; dials
// counts the TCP connections it opens.
func newClient(workers int, dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // loopback only, never through a proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        workers + 16,
		MaxIdleConnsPerHost: workers + 16,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}

// probe does one GET /token and returns the response body; anything but 200 is an error.
func probe(ctx context.Context, client *http.Client, url, assertion string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+assertion)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("probe GET /token: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("probe GET /token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("probe GET /token: status %d: %s", resp.StatusCode, b)
	}
	return b, nil
}

// startBaseline serves a bare handler on addr that answers every request with n bytes
// of JSON and the headers a token response carries (Content-Length included), with the same server timeouts as
// tokensvc, over TLS when tlsCfg is set. It returns the base URL and a stop function.
func startBaseline(addr string, n int, tlsCfg *tls.Config) (string, func(), error) {
	body := baselineBody(n)
	length := strconv.Itoa(len(body))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Length", length) // as tokensvc sends its token responses
			w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	scheme := "http://"
	if tlsCfg != nil {
		srv.TLSConfig = tlsCfg
		ln = tls.NewListener(ln, tlsCfg)
		scheme = "https://"
	}
	go srv.Serve(ln)
	return scheme + ln.Addr().String(), func() { srv.Close() }, nil
}

// startBaselineProcess runs this binary's serve-baseline in a child process and returns
// its URL, its pid and a stop function that ends it and waits for it.
func startBaselineProcess(ctx context.Context, n int, extra ...string) (string, int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, append([]string{"serve-baseline", "-bytes", strconv.Itoa(n)}, extra...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case u, ok := <-line:
		if !ok {
			stop()
			return "", 0, nil, errors.New("baseline process: no URL")
		}
		return u, cmd.Process.Pid, stop, nil
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return "", 0, nil, errors.New("baseline process: did not start")
}

// serveBaseline runs the baseline handler in its own process until ctx ends, so it can
// be measured as a separate process like tokensvc: serve-baseline -addr A -bytes N.
func serveBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tokenbench serve-baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "loopback listen address")
	n := fs.Int("bytes", 2500, "response body size (that of a real GET /token response)")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate (with -tls-key)")
	keyFile := fs.String("tls-key", "", "PEM private key of -tls-cert")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !isLoopback(host) {
		return fmt.Errorf("-addr %q: want a loopback host:port", *addr)
	}
	if *n < 0 || *n > 1<<20 {
		return errors.New("-bytes: 0 to 1 MiB")
	}
	var tlsCfg *tls.Config
	if *certFile != "" || *keyFile != "" {
		if tlsCfg, err = tlsServerConfig(*certFile, *keyFile); err != nil {
			return err
		}
	}
	base, stop, err := startBaseline(*addr, *n, tlsCfg)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintln(stdout, base)
	<-ctx.Done()
	return nil
}

// baselineBody is a JSON object of exactly n bytes (n ≥ 8), so the baseline returns no
// token material at all.
func baselineBody(n int) []byte {
	const head, tail = `{"x":"`, `"}`
	if n < len(head)+len(tail) {
		return []byte(strings.Repeat(" ", n))
	}
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

func printFreePort(stdout io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	_, err = fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	return err
}

func printTable(w io.Writer, cfg Config, rep Report) {
	fmt.Fprintf(w, "devices %d, workers %d, duration %v per phase (warm-up %v), response body %d bytes\n\n",
		rep.Devices, cfg.Workers, cfg.Duration, cfg.Warmup, rep.BodyBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tok\treq/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\trefused (429/503+Retry-After)\terrors\tconns\tcpu µs/req tool\tcpu µs/req server\t")
	for _, r := range rep.Results {
		svc := "-"
		if r.ServerCPUPerReq > 0 {
			svc = fmt.Sprintf("%.1f", us(r.ServerCPUPerReq))
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%d\t%.1f\t%s\t\n", r.Name, r.OK, r.Throughput,
			ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max), counts(r.Refusals), counts(r.Errors), r.NewConns, us(r.ClientCPUPerReq), svc)
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

func ms(m Millis) float64 { return float64(m) / float64(time.Millisecond) }

func us(m Micros) float64 { return float64(m) / float64(time.Microsecond) }

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
