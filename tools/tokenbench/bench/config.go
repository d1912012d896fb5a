package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/cliflags"
)

// Common is the configuration every benchmark has: the service, its operator token,
// the device naming, the workers and their patience. Register adds its flags, Finish
// completes it after parsing, Validate checks it.
type Common struct {
	URL          string
	DevicePrefix string
	Audience     string
	Workers      int
	MaxWait      time.Duration
	Timeout      time.Duration
	ServerPID    int
	JSON         bool
	// MetricsURL is tokensvc's /metrics, scraped around a phase; empty: not scraped.
	MetricsURL string
	AdminToken string

	prefixStem string
	metrics    bool
}

// Defaults are a benchmark's own defaults for Common's flags.
type Defaults struct {
	URL        string
	Workers    int
	WorkerHelp string // what -c counts
	PrefixStem string // the default device prefix is <stem>-<unix time>-
	// Metrics registers -metrics-url, defaulting to <url>/metrics.
	Metrics bool
}

// Register adds Common's flags to fs with d's defaults.
func (c *Common) Register(fs *flag.FlagSet, d Defaults) {
	c.prefixStem, c.metrics = d.PrefixStem, d.Metrics
	fs.StringVar(&c.URL, "url", d.URL, "tokensvc base URL (loopback only)")
	fs.StringVar(&c.DevicePrefix, "device-prefix", "", "device ID prefix (default: "+d.PrefixStem+"-<time>-)")
	fs.StringVar(&c.Audience, "audience", "tokensvc", "aud of the assertions (TOKENSVC_AUDIENCE of the service)")
	fs.IntVar(&c.Workers, "c", d.Workers, d.WorkerHelp)
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Second, "longest Retry-After honoured before retrying")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-exchange timeout")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "also report this process's (tokensvc's) CPU time per request, from /proc")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	if d.Metrics {
		fs.StringVar(&c.MetricsURL, "metrics-url", "", "tokensvc's /metrics, scraped around each phase for store reads (default <url>/metrics; \"off\" to skip)")
	}
}

// Parse parses args with fs (Register's flags and the benchmark's own) and completes
// c: no stray arguments, the admin token from TOKENSVC_ADMIN_TOKEN, the default device
// prefix and metrics URL.
func (c *Common) Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.URL = strings.TrimRight(c.URL, "/")
	c.AdminToken = getenv("TOKENSVC_ADMIN_TOKEN")
	if c.DevicePrefix == "" {
		c.DevicePrefix = fmt.Sprintf("%s-%d-", c.prefixStem, time.Now().Unix())
	}
	if c.metrics {
		switch c.MetricsURL {
		case "":
			c.MetricsURL = c.URL + "/metrics"
		case "off":
			c.MetricsURL = ""
		}
	}
	return nil
}

// Validate rejects a service that is not on this machine (schemes: what -url may be),
// an unbounded number of workers and non-positive waits.
func (c Common) Validate(schemes ...string) error {
	if err := CheckLoopbackURL("-url", c.URL, schemes...); err != nil {
		return err
	}
	if c.MetricsURL != "" {
		if err := CheckLoopbackURL("-metrics-url", c.MetricsURL, "http", "https"); err != nil {
			return err
		}
	}
	switch {
	case c.Workers < 1 || c.Workers > 10_000:
		return errors.New("-c: 1 to 10000 workers")
	case c.MaxWait <= 0 || c.Timeout <= 0:
		return errors.New("-max-wait and -timeout must be positive")
	}
	return nil
}

// NeedAdmin is the error for a run that provisions without TOKENSVC_ADMIN_TOKEN.
func (c Common) NeedAdmin(what string) error {
	if c.AdminToken == "" {
		return fmt.Errorf("%s provisions its devices: set TOKENSVC_ADMIN_TOKEN", what)
	}
	return nil
}

// Phase is a phase named name against url with c's workers and patience and ph's
// bounds.
func (c Common) Phase(name, url string, ph Phases) Phase {
	return Phase{Name: name, URL: url, Workers: c.Workers, Duration: ph.Duration, Requests: ph.Requests, MaxWait: c.MaxWait, Timeout: c.Timeout}
}

// Print writes rep as JSON with -json, else as table writes it; then it reports
// whether the run was interrupted (ctx's error).
func (c Common) Print(ctx context.Context, w io.Writer, rep any, table func(io.Writer)) error {
	if c.JSON {
		return WriteJSON(w, rep)
	}
	table(w)
	return ctx.Err()
}

// Phases is how long the keep-alive benchmarks measure each phase.
type Phases struct {
	Duration time.Duration
	Requests int
	Warmup   time.Duration
}

// Register adds -d, -n and -warmup to fs.
func (p *Phases) Register(fs *flag.FlagSet) {
	fs.DurationVar(&p.Duration, "d", 15*time.Second, "measured duration of each phase")
	fs.IntVar(&p.Requests, "n", 0, "also stop each phase after this many requests (0: duration only)")
	fs.DurationVar(&p.Warmup, "warmup", 2*time.Second, "unmeasured load before each phase (it also fills tokensvc's key cache)")
}

// Validate bounds every phase in time: latencies are kept in memory.
func (p Phases) Validate() error {
	switch {
	case p.Duration <= 0 || p.Duration > 10*time.Minute:
		return errors.New("-d: a duration above 0 and at most 10m (every run is time-bounded; latencies are kept in memory)")
	case p.Requests < 0, p.Warmup < 0, p.Warmup > time.Minute:
		return errors.New("-n must be ≥ 0 and -warmup within 0..1m")
	}
	return nil
}

// NewFlagSet is a flag set for tokenbench subcommand name that reports to stderr.
func NewFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tokenbench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// CheckLoopbackURL accepts raw (the value of flag) only as a URL with one of schemes
// whose host is this machine: the tool never loads anything else.
func CheckLoopbackURL(flag, raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return fmt.Errorf("%s %q: want %s://<loopback>:<port>", flag, raw, strings.Join(schemes, " or "))
	}
	if !cliflags.IsLoopback(u.Hostname()) {
		return fmt.Errorf("%s %q: only loopback targets are allowed", flag, raw)
	}
	return nil
}
