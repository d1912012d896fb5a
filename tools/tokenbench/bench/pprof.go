package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Profiler fetches tokensvc's own CPU and allocation profiles (its opt-in
// /debug/pprof/ on the metrics address, TOKENSVC_PPROF=true) while a phase runs, so a
// profile covers exactly the stretch that was measured.
type Profiler struct {
	// URL is tokensvc's /debug/pprof base (e.g. http://127.0.0.1:9090/debug/pprof);
	// empty: no profiles.
	URL string
	// Dir receives <phase>.cpu.pprof and <phase>.allocs.pprof.
	Dir string
	// Max bounds a profile's length (the storm's phase has no fixed length).
	Max time.Duration
}

// Register adds -pprof-url, -pprof-out and -pprof-seconds to fs.
func (p *Profiler) Register(fs *flag.FlagSet) {
	fs.StringVar(&p.URL, "pprof-url", "", "tokensvc's /debug/pprof base (TOKENSVC_PPROF=true, on TOKENSVC_METRICS_ADDR): fetch its CPU and alloc profiles over the tokensvc phase")
	fs.StringVar(&p.Dir, "pprof-out", ".", "directory for the profiles of -pprof-url (<phase>.cpu.pprof, <phase>.allocs.pprof)")
	fs.DurationVar(&p.Max, "pprof-seconds", 20*time.Second, "longest profile taken with -pprof-url")
}

// Validate keeps the profiler on this machine.
func (p Profiler) Validate() error {
	if p.URL == "" {
		return nil
	}
	if p.Max < time.Second {
		return errors.New("-pprof-seconds: at least 1s")
	}
	return CheckLoopbackURL("-pprof-url", p.URL, "http", "https")
}

// Start begins a CPU and an allocation profile of length min(d, Max) (whole seconds)
// named after phase; the returned wait blocks until both are written. Without a URL it
// does nothing.
func (p Profiler) Start(ctx context.Context, client *http.Client, phase string, d time.Duration) (wait func() error) {
	if p.URL == "" {
		return func() error { return nil }
	}
	secs := p.seconds(d)
	errc := make(chan error, 2)
	for _, kind := range []string{"profile", "allocs"} {
		name := map[string]string{"profile": "cpu", "allocs": "allocs"}[kind]
		go func() {
			url := fmt.Sprintf("%s/%s?seconds=%d", strings.TrimRight(p.URL, "/"), kind, secs)
			errc <- fetchTo(ctx, client, url, filepath.Join(p.Dir, phase+"."+name+".pprof"), time.Duration(secs+30)*time.Second)
		}()
	}
	return func() error { return errors.Join(<-errc, <-errc) }
}

// StartCPU begins one CPU profile of length min(d, Max) from another process's pprof
// "profile" endpoint url, sent with header (e.g. Vault's sys/pprof/profile and its
// X-Vault-Token), into Dir/<name>.cpu.pprof. It needs Dir only, not URL; the returned
// wait blocks until the profile is written.
func (p Profiler) StartCPU(ctx context.Context, client *http.Client, url string, header http.Header, name string, d time.Duration) (wait func() error) {
	secs := p.seconds(d)
	errc := make(chan error, 1)
	go func() {
		u := fmt.Sprintf("%s?seconds=%d", url, secs)
		build := func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err == nil {
				req.Header = header.Clone()
			}
			return req, err
		}
		errc <- fetchWith(ctx, client, u, build, filepath.Join(p.Dir, name+".cpu.pprof"), time.Duration(secs+30)*time.Second)
	}()
	return func() error { return <-errc }
}

// seconds is a profile's length for a phase of d: min(d, Max) in whole seconds, at least 1.
func (p Profiler) seconds(d time.Duration) int { return max(1, int(min(d, p.Max)/time.Second)) }

// fetchTo writes the body of a GET of url to file.
func fetchTo(ctx context.Context, client *http.Client, url, file string, timeout time.Duration) error {
	return fetchWith(ctx, client, url, get(url), file, timeout)
}

func fetchWith(ctx context.Context, client *http.Client, url string, build func(context.Context) (*http.Request, error), file string, timeout time.Duration) error {
	return fetch(ctx, client, timeout, "profile "+url, build, func(r io.Reader) error {
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

// BaselineArgs are the flags that make the bare handler's child process (the baseline
// subcommand) write its own CPU profile beside tokensvc's, as baseline.cpu.pprof, when
// profiles are taken: the two can then be read together (go tool pprof -diff_base).
func (p Profiler) BaselineArgs() []string {
	if p.URL == "" {
		return nil
	}
	return []string{"-cpuprofile", filepath.Join(p.Dir, "baseline.cpu.pprof")}
}
