package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// TestGatewayScale measures the gateway binary with 1,000 leaves on one AMQP connection
// to the rhea peer, tokens minted by the real service through POST /token/batch: the
// time until every leaf's token is on the connection, resident memory (sampled every 500 ms) during two
// token lifetimes of steady traffic and a burst, tokens fetched and batch calls per
// hour, and messages per second through the bridge (TCP lines in, hub acceptance out,
// queue fsyncs included). A measurement, so it runs only with TOKENAGENT_MEASURE_GW=1;
// TOKENAGENT_GW_LEAVES, _GW_TTL and _GW_BURST change its size.
func TestGatewayScale(t *testing.T) {
	if os.Getenv("TOKENAGENT_MEASURE_GW") == "" {
		t.Skip("set TOKENAGENT_MEASURE_GW=1 to measure the gateway at scale")
	}
	nLeaves := envInt("TOKENAGENT_GW_LEAVES", 1000)
	ttl := time.Duration(envInt("TOKENAGENT_GW_TTL", 60)) * time.Second
	burst := envInt("TOKENAGENT_GW_BURST", 20000)

	bin := filepath.Join(t.TempDir(), "tokenagent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ids := make([]string, nLeaves)
	for i := range ids {
		ids[i] = fmt.Sprintf("sensor-%04d", i)
	}
	start := time.Now()
	f := testpeer.NewGatewayFixture(t, "edge-scale", ids, ttl)
	t.Logf("provisioned %d leaves in %v", nLeaves, time.Since(start).Round(time.Millisecond))
	peer := testpeer.StartAMQP(t, testpeer.AMQPOptions{Hub: testpeer.Hub, HubName: testpeer.HubName,
		Cert: f.CA.Issue(t, testpeer.Hub), Keys: f.LeafKeys})
	leavesFile := filepath.Join(f.Dir, "leaves")
	if err := os.WriteFile(leavesFile, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lineAddr := freeAddr(t, "tcp")
	stderr := &syncbuf.Buffer{}
	cmd := exec.Command(bin, agentArgs(f.Fixture, filepath.Join(f.Dir, "state"), "-gateway", "-link", "amqp",
		"-broker-addr", peer.Addr, "-leaves-file", leavesFile, "-gateway-line", lineAddr, "-log-level", "info")...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill() // the process this test started
			_ = cmd.Wait()
		}
	}()
	var (
		mu   sync.Mutex
		peak int
		last int
	)
	sampling := make(chan struct{})
	go func() {
		for {
			select {
			case <-sampling:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if kb := vmRSS(t, cmd.Process.Pid); kb > 0 {
				mu.Lock()
				last, peak = kb, max(peak, kb)
				mu.Unlock()
			}
		}
	}()
	defer close(sampling)

	t0 := time.Now()
	waitFor(t, "every leaf's token on the connection", 5*time.Minute, func() bool { return len(peer.Events("cbs")) >= nLeaves })
	attach := time.Since(t0)

	// Steady traffic for two token lifetimes: one message per leaf every 10 s.
	conns := dialLines(t, lineAddr, 20)
	steadyEnd := time.Now().Add(2*ttl + 10*time.Second)
	steady := 0
	for time.Now().Before(steadyEnd) {
		for i := 0; i < nLeaves/10; i++ {
			fmt.Fprintf(conns[steady%len(conns)], "%s steady-%d\n", ids[steady%nLeaves], steady)
			steady++
		}
		flushLines(t, conns)
		time.Sleep(time.Second)
	}
	flushLines(t, conns)
	waitFor(t, "the steady messages at the peer", 2*time.Minute, func() bool { return len(peer.Events("message")) >= steady })
	mu.Lock()
	steadyPeak := peak
	mu.Unlock()

	// Burst: as fast as 20 connections take lines, spread over every leaf.
	before := len(peer.Events("message"))
	b0 := time.Now()
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() {
			for i := c; i < burst; i += len(conns) {
				fmt.Fprintf(conns[c], "%s burst-%d\n", ids[i%nLeaves], i)
			}
		})
	}
	wg.Wait()
	flushLines(t, conns)
	waitFor(t, "the burst at the peer", 10*time.Minute, func() bool { return len(peer.Events("message")) >= before+burst })
	burstTime := time.Since(b0)
	ran := time.Since(t0)

	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	stopped = true
	st := finalStats(t, stderr.String())
	mu.Lock()
	defer mu.Unlock()
	hours := ran.Hours()
	t.Logf("leaves %d, token lifetime %v, ran %v", nLeaves, ttl, ran.Round(time.Second))
	t.Logf("every leaf's token put on one AMQP connection %v after start (peer opens: %d); telemetry links attached on demand: %d",
		attach.Round(time.Millisecond), len(peer.Events("open")), st["amqp"]["LinkAttaches"])
	t.Logf("VmRSS: peak %d KiB (%.1f MiB) during steady traffic, peak %d KiB (%.1f MiB) overall, last %d KiB",
		steadyPeak, float64(steadyPeak)/1024, peak, float64(peak)/1024, last)
	t.Logf("tokens: %d fetched in %d batch calls (%d failed) = %.0f tokens/h, %.0f calls/h at a %v lifetime; %d renewals on the open connection",
		st["tokens"]["Fetched"], st["tokens"]["Calls"], st["tokens"]["CallsFailed"], float64(st["tokens"]["Fetched"])/hours,
		float64(st["tokens"]["Calls"])/hours, ttl, st["amqp"]["Renewals"])
	t.Logf("burst: %d messages through the bridge in %v = %.0f msg/s; queue %v", burst, burstTime.Round(time.Millisecond),
		float64(burst)/burstTime.Seconds(), st["queue"])
	n := 0
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			if n++; n <= 5 || strings.Contains(line, "amqp-mux") {
				t.Logf("agent: %s", line)
			}
		}
	}
	t.Logf("agent warnings and errors: %d", n)
	if peak > 64<<10 {
		t.Errorf("peak RSS %d KiB is over the 64 MiB budget", peak)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

type lineConn struct {
	net.Conn
	*bufio.Writer
}

func (c lineConn) Write(b []byte) (int, error) { return c.Writer.Write(b) }

func dialLines(t *testing.T, addr string, n int) []lineConn {
	t.Helper()
	out := make([]lineConn, n)
	for i := range out {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out[i] = lineConn{Conn: c, Writer: bufio.NewWriter(c)}
	}
	return out
}

func flushLines(t *testing.T, conns []lineConn) {
	t.Helper()
	for _, c := range conns {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}
