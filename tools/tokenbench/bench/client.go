package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// NewClient is a keep-alive client with room for every worker's connection, over TLS
// with tlsCfg if it is set; dials (if not nil) counts the TCP connections it opens.
func NewClient(workers int, tlsCfg *tls.Config, dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // loopback only, never through a proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     tlsCfg,
		MaxIdleConns:        workers + 16,
		MaxIdleConnsPerHost: workers + 16,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}

// KeepAlive is the keep-alive client of a benchmark's workers, counting the TCP
// connections it opens.
type KeepAlive struct {
	*http.Client
	dials atomic.Int64
}

// NewKeepAlive is a KeepAlive with room for workers connections.
func NewKeepAlive(workers int) *KeepAlive {
	k := &KeepAlive{}
	k.Client = NewClient(workers, nil, &k.dials)
	return k
}

// Probe does one GET /token at url and returns the response body; anything but 200 is
// an error. It proves the setup works and sizes the baseline's body.
func Probe(ctx context.Context, client *http.Client, url, assertion string) ([]byte, error) {
	return ProbeRequest(ctx, client, "GET /token", func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+assertion)
		}
		return req, err
	})
}

// ProbeRequest sends the request build makes once (10 s at most) and returns the body
// of its 200; any other answer is an error naming what (e.g. "GET /token").
func ProbeRequest(ctx context.Context, client *http.Client, what string, build func(context.Context) (*http.Request, error)) ([]byte, error) {
	var b []byte
	err := fetch(ctx, client, 10*time.Second, "probe "+what, build, func(r io.Reader) (err error) {
		b, err = io.ReadAll(io.LimitReader(r, 1<<20))
		return err
	})
	return b, err
}

// fetch sends the request build makes (bounded by timeout) and hands the body of its
// 200 to read; an error, from any step or another status (with the answer's body),
// names what.
func fetch(ctx context.Context, client *http.Client, timeout time.Duration, what string,
	build func(context.Context) (*http.Request, error), read func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := build(ctx)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("%s: status %d: %s", what, resp.StatusCode, b)
	}
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// get is a build function for fetch: a GET of url.
func get(url string) func(context.Context) (*http.Request, error) {
	return func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	}
}

// ProbeDevice is Probe of the service at baseURL with an HS256 assertion of d.
func ProbeDevice(ctx context.Context, client *http.Client, baseURL, audience string, d Device) ([]byte, error) {
	return Probe(ctx, client, baseURL+"/token", NewSigner(audience, "probe-").Sign(d, time.Now()))
}

// WarmUp runs p for d, unmeasured, through run; with d ≤ 0 it does nothing.
func WarmUp(ctx context.Context, p Phase, d time.Duration, run func(context.Context, Phase) Result) {
	if d <= 0 {
		return
	}
	p.Duration, p.Requests = d, 0
	run(ctx, p)
}

// Measure runs p through run and adds to the result the TCP connections client opened
// meanwhile and this process's CPU per successful request; it also returns the CPU per
// successful request of each of pids (0 for pids ≤ 0).
func Measure(ctx context.Context, p Phase, client *KeepAlive, run func(context.Context, Phase) Result, pids ...int) (Result, []Micros, error) {
	meter, err := StartCPU(pids...)
	if err != nil {
		return Result{}, nil, err
	}
	dials0 := client.dials.Load()
	r := run(ctx, p)
	r.NewConns = int(client.dials.Load() - dials0)
	self, procs, err := meter.PerOp(r.OK)
	r.ClientCPUPerReq = self
	return r, procs, err
}
