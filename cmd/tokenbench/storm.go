package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StormConfig is one boot-storm run: every device does one GET /token over a new TLS
// connection with a fresh ES256 assertion.
type StormConfig struct {
	URL          string
	Devices      int
	Workers      int
	Hub          string
	DevicePrefix string
	Audience     string
	CACert       string
	Insecure     bool
	MaxDuration  time.Duration
	MaxWait      time.Duration
	Timeout      time.Duration
	ServerPID    int
	MetricsURL   string
	Baseline     bool
	TLSCert      string // for the baseline's TLS listener
	TLSKey       string
	PostQuantum  bool
	JSON         bool
	CPUProfile   string
	AdminToken   string
}

// Validate rejects storms that would be unbounded, off this machine or unverifiable.
func (c StormConfig) Validate() error {
	if err := checkLoopbackURL("-url", c.URL, "https"); err != nil {
		return err
	}
	if c.MetricsURL != "" {
		if err := checkLoopbackURL("-metrics-url", c.MetricsURL, "http", "https"); err != nil {
			return err
		}
	}
	switch {
	case c.Devices < 1 || c.Devices > 1_000_000:
		return errors.New("-devices: 1 to 1000000")
	case c.AdminToken == "":
		return errors.New("storm provisions its devices: set TOKENSVC_ADMIN_TOKEN")
	case c.Workers < 1 || c.Workers > 10_000:
		return errors.New("-c: 1 to 10000 concurrent devices")
	case (c.CACert == "") == !c.Insecure:
		return errors.New("give exactly one of -cacert FILE or -insecure")
	case c.MaxDuration <= 0 || c.MaxDuration > 30*time.Minute:
		return errors.New("-max-duration: above 0 and at most 30m (every storm is time-bounded)")
	case c.MaxWait <= 0 || c.Timeout <= 0:
		return errors.New("-max-wait and -timeout must be positive")
	case c.Baseline && (c.TLSCert == "" || c.TLSKey == ""):
		return errors.New("-baseline needs -tls-cert and -tls-key for its TLS listener")
	}
	return nil
}

func parseStormConfig(args []string, getenv func(string) string, stderr io.Writer) (StormConfig, error) {
	var c StormConfig
	fs := flag.NewFlagSet("tokenbench storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "https://127.0.0.1:8443", "tokensvc base URL (https, loopback only)")
	fs.IntVar(&c.Devices, "devices", 50_000, "simulated ES256 devices, each registered through POST /devices/import and doing one GET /token")
	fs.IntVar(&c.Workers, "c", 128, "devices connecting at once")
	fs.StringVar(&c.Hub, "hub", "storm", "hub the devices belong to (created if absent)")
	fs.StringVar(&c.DevicePrefix, "device-prefix", "", "device ID prefix (default: storm-<time>-)")
	fs.StringVar(&c.Audience, "audience", "tokensvc", "aud of the assertions (TOKENSVC_AUDIENCE of the service)")
	fs.StringVar(&c.CACert, "cacert", "", "PEM CA (or self-signed certificate) the service's TLS certificate chains to")
	fs.BoolVar(&c.Insecure, "insecure", false, "do not verify the service's certificate (loopback only, instead of -cacert)")
	fs.DurationVar(&c.MaxDuration, "max-duration", 10*time.Minute, "stop each storm after this long, served or not")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Second, "longest Retry-After honoured before the device retries")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-exchange timeout (dial, TLS handshake, request, body)")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "report this process's (tokensvc's) CPU per device and peak RSS, from /proc")
	fs.StringVar(&c.MetricsURL, "metrics-url", "", "tokensvc's /metrics, scraped before and after the storm for store reads (default <url>/metrics; \"off\" to skip)")
	fs.BoolVar(&c.Baseline, "baseline", false, "first run the same storm against a bare TLS net/http handler in a child process (needs -tls-cert, -tls-key)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "certificate of the baseline's TLS listener (use the service's, so -cacert trusts both)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "key of -tls-cert")
	fs.BoolVar(&c.PostQuantum, "pq", false, "let the client offer Go's default hybrid post-quantum key exchange (X25519MLKEM768); default X25519 and P-256 only, like typical device TLS stacks")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write this tool's CPU profile during the tokensvc storm to this file (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.URL = strings.TrimRight(c.URL, "/")
	switch c.MetricsURL {
	case "":
		c.MetricsURL = c.URL + "/metrics"
	case "off":
		c.MetricsURL = ""
	}
	c.AdminToken = getenv("TOKENSVC_ADMIN_TOKEN")
	if c.DevicePrefix == "" {
		c.DevicePrefix = fmt.Sprintf("storm-%d-", time.Now().Unix())
	}
	return c, c.Validate()
}

// stormParams are what one storm against one target needs.
type stormParams struct {
	name     string
	url      string // full URL of the token endpoint
	workers  int
	audience string
	deadline time.Duration // the storm gives up on unserved devices after this long
	maxWait  time.Duration // longest Retry-After honoured
	timeout  time.Duration // per exchange
	now      func() time.Time
}

// StormResult is one storm against one target; also the -json form.
type StormResult struct {
	Name       string  `json:"name"`
	Target     string  `json:"target"`
	Devices    int     `json:"devices"`
	Workers    int     `json:"workers"`
	Served     int     `json:"served"`
	Failed     int     `json:"failed"`     // devices whose exchange ended in an error
	Unfinished int     `json:"unfinished"` // devices neither served nor failed at the deadline
	Elapsed    Seconds `json:"elapsedSeconds"`
	Throughput float64 `json:"devicesPerSecond"`
	// Exchange latency: one successful exchange, dial and TLS handshake included.
	P50 Millis `json:"p50Ms"`
	P95 Millis `json:"p95Ms"`
	P99 Millis `json:"p99Ms"`
	Max Millis `json:"maxMs"`
	// Device completion: from a device's first attempt to its token, Retry-After waits
	// and retries included.
	DeviceP50   Millis         `json:"deviceP50Ms"`
	DeviceP99   Millis         `json:"deviceP99Ms"`
	DeviceMax   Millis         `json:"deviceMaxMs"`
	Attempts    int            `json:"attempts"`
	Refusals    map[string]int `json:"refusals"`
	Errors      map[string]int `json:"errors"`
	Connections int            `json:"connections"` // TCP connections dialled
	Resumed     int            `json:"resumedSessions"`
	// CPU per served device: this process (the generator), and the target's process.
	ClientCPUPerDevice Micros `json:"clientCpuUsPerDevice"`
	ServerCPUPerDevice Micros `json:"serverCpuUsPerDevice,omitempty"`
	ServerPeakRSS      int64  `json:"serverPeakRssBytes,omitempty"`
	// StoreReads are the target's store-read counters over the storm (absent: n/a).
	StoreReads  map[string]float64 `json:"storeReads,omitempty"`
	Interrupted bool               `json:"interrupted,omitempty"`
}

// stormTally is one worker's private counts.
type stormTally struct {
	*tally
	id       string          // worker ID, part of every jti it makes
	seq      uint64          // assertions signed by this worker
	done     []time.Duration // device completion times of served devices
	attempts int
	resumed  int
	failed   int
	served   int
	last     time.Time // when this worker's last device finished
}

// stormQueue hands devices to workers: each device once, then again after a refusal's
// Retry-After. It is finished when every device has been served or has failed.
type stormQueue struct {
	n       int
	next    atomic.Int64
	retry   chan int // devices whose Retry-After has passed
	pending atomic.Int64
	done    chan struct{}
	once    sync.Once
}

func newStormQueue(n int) *stormQueue {
	q := &stormQueue{n: n, retry: make(chan int, n), done: make(chan struct{})}
	q.pending.Store(int64(n))
	return q
}

// take returns the next device to try: a retry that is due, else a fresh device, else
// it waits for a retry; false when the storm is over or ctx ended.
func (q *stormQueue) take(ctx context.Context) (int, bool) {
	select {
	case i := <-q.retry:
		return i, true
	default:
	}
	if i := q.next.Add(1) - 1; i < int64(q.n) {
		return int(i), true
	}
	select {
	case i := <-q.retry:
		return i, true
	case <-q.done:
	case <-ctx.Done():
	}
	return 0, false
}

// later queues device i again after d. The channel has room for every device, so the
// timer never blocks.
func (q *stormQueue) later(i int, d time.Duration) {
	time.AfterFunc(d, func() { q.retry <- i })
}

// finish marks one device served or failed.
func (q *stormQueue) finish() {
	if q.pending.Add(-1) == 0 {
		q.once.Do(func() { close(q.done) })
	}
}

// runStorm lets every device in devs fetch one token from p.url over a new connection
// per exchange (client must not keep connections alive), p.workers at a time, honouring
// Retry-After on refusals with a new assertion per attempt. It returns when every
// device is served or failed, at p.deadline, or when ctx ends.
func runStorm(ctx context.Context, client *http.Client, p stormParams, devs []keyDevice) StormResult {
	if p.now == nil {
		p.now = time.Now
	}
	ctx, cancel := context.WithTimeout(ctx, p.deadline)
	defer cancel()
	q := newStormQueue(len(devs))
	first := make([]time.Time, len(devs)) // each written by one worker at a time
	tallies := make([]*stormTally, p.workers)
	start := p.now()
	runID := strconv.FormatInt(start.UnixNano(), 36)
	var wg sync.WaitGroup
	for w := range p.workers {
		t := &stormTally{tally: newTally(), id: strconv.Itoa(w), last: start}
		tallies[w] = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := q.take(ctx)
				if !ok {
					return
				}
				stormAttempt(ctx, client, p, q, devs, first, i, runID, t)
			}
		}()
	}
	wg.Wait()
	r := summarizeStorm(p, len(devs), start, tallies)
	r.Interrupted = ctx.Err() != nil && q.pending.Load() > 0
	return r
}

// stormAttempt is one attempt of device i: a fresh assertion, one exchange, and what
// follows from its outcome.
func stormAttempt(ctx context.Context, client *http.Client, p stormParams, q *stormQueue, devs []keyDevice, first []time.Time, i int, runID string, t *stormTally) {
	now := p.now()
	if first[i].IsZero() {
		first[i] = now
	}
	t.attempts++
	t.seq++
	jti := runID + "-" + t.id + "-" + strconv.FormatUint(t.seq, 36)
	assertion, err := signES256(devs[i], p.audience, jti, now)
	if err != nil {
		t.errors["sign"]++
		t.failed++
		q.finish()
		return
	}
	o := tryToken(ctx, client, p.url, p.timeout, assertion)
	t.record(o)
	if o.resumed {
		t.resumed++
	}
	switch o.kind {
	case outcomeOK:
		t.served++
		t.last = p.now()
		t.done = append(t.done, t.last.Sub(first[i]))
		q.finish()
	case outcomeRefused:
		q.later(i, min(o.wait, p.maxWait))
	case outcomeError:
		t.failed++
		t.last = p.now()
		q.finish()
	case outcomeCanceled:
		t.attempts-- // the run ended; nothing was decided
	}
}

// summarizeStorm merges the workers' tallies.
func summarizeStorm(p stormParams, devices int, start time.Time, tallies []*stormTally) StormResult {
	r := StormResult{Name: p.name, Target: p.url, Devices: devices, Workers: p.workers, Refusals: map[string]int{}, Errors: map[string]int{}}
	var lat, done []time.Duration
	last := start
	for _, t := range tallies {
		lat = append(lat, t.lat...)
		done = append(done, t.done...)
		for k, v := range t.refusals {
			r.Refusals[k] += v
		}
		for k, v := range t.errors {
			r.Errors[k] += v
		}
		r.Attempts += t.attempts
		r.Resumed += t.resumed
		r.Served += t.served
		r.Failed += t.failed
		if t.last.After(last) {
			last = t.last
		}
	}
	r.Unfinished = devices - r.Served - r.Failed
	elapsed := last.Sub(start)
	if r.Unfinished > 0 {
		elapsed = p.now().Sub(start)
	}
	r.Elapsed = Seconds(elapsed)
	if elapsed > 0 {
		r.Throughput = float64(r.Served) / elapsed.Seconds()
	}
	slices.Sort(lat)
	slices.Sort(done)
	r.P50, r.P95, r.P99 = Millis(percentile(lat, 50)), Millis(percentile(lat, 95)), Millis(percentile(lat, 99))
	r.DeviceP50, r.DeviceP99 = Millis(percentile(done, 50)), Millis(percentile(done, 99))
	if len(lat) > 0 {
		r.Max = Millis(lat[len(lat)-1])
	}
	if len(done) > 0 {
		r.DeviceMax = Millis(done[len(done)-1])
	}
	return r
}

// newStormClient opens a new TCP and TLS connection for every request: no keep-alive,
// no session cache (so no resumption), HTTP/1.1. dials counts the connections.
func newStormClient(tlsCfg *tls.Config, dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: tlsCfg,
		// No handshake timeout of its own: the exchange's -timeout bounds it, so a slow
		// handshake fails by the server's deadline (5 s in tokensvc) rather than ours.
		TLSHandshakeTimeout: 0,
		DisableKeepAlives:   true,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr}
}

// stormTLSConfig is the devices' TLS client configuration: trust caFile (or nothing at
// all with insecure), no session tickets or cache, and unless pq the classic key
// exchanges a device TLS stack offers.
func stormTLSConfig(caFile string, insecure, pq bool) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		ClientSessionCache:     nil,
	}
	if !pq {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	if insecure {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-cacert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("-cacert %s: no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
