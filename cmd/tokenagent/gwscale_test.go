package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// TestGatewayScale measures the gateway binary with 1,000 leaves on one AMQP connection
// to the rhea peer, tokens minted by the real service through POST /token/batch: the
// time until every leaf's token is on the connection, resident memory (sampled every 500 ms) during two
// token lifetimes of steady traffic and a burst, tokens fetched and batch calls per
// hour, and messages per second through the bridge (TCP lines in, hub acceptance out,
// queue fsyncs included). A measurement, so it runs only with TOKENAGENT_MEASURE_GW=1;
// TOKENAGENT_GW_LEAVES, _GW_TTL and _GW_BURST change its size. TOKENAGENT_GW_INTAKE=mqtt
// makes every leaf a real MQTT client of the local broker instead (connected all along,
// subscribed to its cloud-to-device topic, publishing at QoS 1), and adds one C2D
// message per leaf from the peer, timed until every leaf has its own.
func TestGatewayScale(t *testing.T) {
	if os.Getenv("TOKENAGENT_MEASURE_GW") == "" {
		t.Skip("set TOKENAGENT_MEASURE_GW=1 to measure the gateway at scale")
	}
	nLeaves := envInt("TOKENAGENT_GW_LEAVES", 1000)
	ttl := time.Duration(envInt("TOKENAGENT_GW_TTL", 60)) * time.Second
	burst := envInt("TOKENAGENT_GW_BURST", 20000)
	mqttIntake := os.Getenv("TOKENAGENT_GW_INTAKE") == "mqtt"

	bin := filepath.Join(t.TempDir(), "tokenagent")
	// TOKENAGENT_GW_AGENTLOG=FILE saves the agent's whole log (JSON lines) there;
	// TOKENAGENT_GW_WORKERS sets its -gateway-workers.
	// TOKENAGENT_GW_PPROF=DIR builds the agent with net/http/pprof (-tags gwpprof) and
	// writes heap and goroutine profiles taken at the end of the steady traffic to DIR,
	// a heap profile with MemStats 5 s into the burst (heap-intake.txt) and one once the
	// intake accepted the whole burst (heap-burst.*).
	pprofDir := os.Getenv("TOKENAGENT_GW_PPROF")
	buildArgs := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", bin}
	if pprofDir != "" {
		buildArgs = append(buildArgs, "-tags", "gwpprof")
	}
	build := exec.Command("go", append(buildArgs, ".")...)
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
	peer := f.StartAMQP(t)
	leavesFile := filepath.Join(f.Dir, "leaves")
	if err := os.WriteFile(leavesFile, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	intakeAddr := freeAddr(t, "tcp")
	intakeFlag := "-gateway-line"
	if mqttIntake {
		intakeFlag = "-gateway-mqtt"
	}
	stderr := &syncbuf.Buffer{}
	extra := []string{"-gateway", "-link", "amqp", "-broker-addr", peer.Addr, "-leaves-file", leavesFile, intakeFlag, intakeAddr, "-log-level", "info"}
	if w := os.Getenv("TOKENAGENT_GW_WORKERS"); w != "" { // the agent's -gateway-workers
		extra = append(extra, "-gateway-workers", w)
	}
	cmd := exec.Command(bin, agentArgs(f.Fixture, filepath.Join(f.Dir, "state"), extra...)...)
	cmd.Stderr = stderr
	pprofAddr := freeAddr(t, "tcp")
	if pprofDir != "" {
		cmd.Env = append(os.Environ(), "TOKENAGENT_PPROF="+pprofAddr)
	}
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
	testpeer.WaitFor(t, "every leaf's token on the connection", 5*time.Minute, func() bool { return len(peer.Events("cbs")) >= nLeaves })
	attach := time.Since(t0)

	var in leafIntake
	if mqttIntake {
		l0 := time.Now()
		in = dialLeaves(t, intakeAddr, ids)
		t.Logf("%d MQTT leaves connected and subscribed in %v", nLeaves, time.Since(l0).Round(time.Millisecond))
	} else {
		in = &lineConns{ids: ids, conns: dialLines(t, intakeAddr, 20), mu: make([]sync.Mutex, 20)}
	}

	// Steady traffic for two token lifetimes: one message per leaf every 10 s.
	steadyEnd := time.Now().Add(2*ttl + 10*time.Second)
	steady := 0
	for time.Now().Before(steadyEnd) {
		for i := 0; i < nLeaves/10; i++ {
			in.send(t, steady%nLeaves, fmt.Sprint("steady-", steady))
			steady++
		}
		in.flush(t)
		time.Sleep(time.Second)
	}
	in.flush(t)
	testpeer.WaitFor(t, "the steady messages at the peer", 2*time.Minute, func() bool { return len(peer.Events("message")) >= steady })
	mu.Lock()
	steadyPeak := peak
	mu.Unlock()
	steadyStatus := procStatus(cmd.Process.Pid)
	if pprofDir != "" {
		for _, p := range []string{"heap", "goroutine"} {
			saveProfile(t, "http://"+pprofAddr+"/debug/pprof/"+p, filepath.Join(pprofDir, p+".pprof"))
		}
	}

	// Cloud-to-device: one message per leaf, queued at the peer for a leaf without a
	// C2D link (as IoT Hub keeps them), timed until every leaf has its own.
	var c2dAll time.Duration
	if mqttIntake {
		c0 := time.Now()
		for _, id := range ids {
			if err := peer.C2D(id, "c2d-"+id); err != nil {
				t.Fatal(err)
			}
		}
		lv := in.(*mqttLeaves)
		testpeer.WaitFor(t, "one C2D message at every leaf", 10*time.Minute, func() bool { return lv.c2dReceived() >= nLeaves })
		c2dAll = time.Since(c0)
	}

	// Burst: as fast as 20 writers take messages, spread over every leaf.
	before := len(peer.Events("message"))
	b0 := time.Now()
	var wg sync.WaitGroup
	if pprofDir != "" { // during the intake, while the leaves' messages stream in
		time.AfterFunc(5*time.Second, func() {
			saveProfile(t, "http://"+pprofAddr+"/debug/pprof/heap?debug=1", filepath.Join(pprofDir, "heap-intake.txt"))
		})
	}
	for c := range 20 {
		wg.Go(func() {
			for i := c; i < burst; i += 20 {
				in.send(t, i%nLeaves, fmt.Sprint("burst-", i))
			}
		})
	}
	wg.Wait()
	in.flush(t)
	burstAccepted := time.Since(b0)
	burstStatus := procStatus(cmd.Process.Pid)
	if pprofDir != "" { // mid-burst: every message accepted, most not yet at the hub
		saveProfile(t, "http://"+pprofAddr+"/debug/pprof/heap", filepath.Join(pprofDir, "heap-burst.pprof"))
		saveProfile(t, "http://"+pprofAddr+"/debug/pprof/heap?debug=1", filepath.Join(pprofDir, "heap-burst.txt"))
	}
	testpeer.WaitFor(t, "the burst at the peer", 10*time.Minute, func() bool { return len(peer.Events("message")) >= before+burst })
	burstTime := time.Since(b0)
	ran := time.Since(t0)

	if mqttIntake {
		t.Logf("leaf connections lost before the agent stopped: %d", in.(*mqttLeaves).lost.Load())
	}
	// The kernel's high-water mark catches a peak the 500 ms samples miss.
	endStatus := procStatus(cmd.Process.Pid)
	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	stopped = true
	if p := os.Getenv("TOKENAGENT_GW_AGENTLOG"); p != "" {
		if err := os.WriteFile(p, []byte(stderr.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	st := finalStats(t, stderr.String())
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, `"msg":"stopped"`) {
			if i := strings.Index(line, `"runtime":`); i >= 0 {
				rt, _, _ := strings.Cut(line[i:], "}")
				t.Logf("agent at exit: %s}", rt)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	hours := ran.Hours()
	t.Logf("leaves %d (intake %s), token lifetime %v, ran %v", nLeaves, intakeFlag, ttl, ran.Round(time.Second))
	t.Logf("every leaf's token put on one AMQP connection %v after start (peer opens: %d); telemetry links attached on demand: %d",
		attach.Round(time.Millisecond), len(peer.Events("open")), st["amqp"]["LinkAttaches"])
	if mqttIntake {
		c2dLinks := 0
		for _, e := range peer.Events("link") {
			if strings.HasSuffix(e.Address, "/messages/devicebound") {
				c2dLinks++
			}
		}
		t.Logf("C2D: one message per leaf, all %d delivered to their MQTT leaves %v after the first was sent; %d C2D link attaches; mqtt %v; amqp %v",
			nLeaves, c2dAll.Round(time.Millisecond), c2dLinks, st["mqttIntake"], st["amqp"])
	}
	t.Logf("VmRSS: peak %d KiB (%.1f MiB) during steady traffic, peak %d KiB (%.1f MiB) overall, last %d KiB",
		steadyPeak, float64(steadyPeak)/1024, peak, float64(peak)/1024, last)
	t.Logf("tokens: %d fetched in %d batch calls (%d failed) = %.0f tokens/h, %.0f calls/h at a %v lifetime; %d renewals on the open connection",
		st["tokens"]["Fetched"], st["tokens"]["Calls"], st["tokens"]["CallsFailed"], float64(st["tokens"]["Fetched"])/hours,
		float64(st["tokens"]["Calls"])/hours, ttl, st["amqp"]["Renewals"])
	t.Logf("burst: %d messages through the bridge in %v = %.0f msg/s (all accepted by the intake after %v); queue %v", burst,
		burstTime.Round(time.Millisecond), float64(burst)/burstTime.Seconds(), burstAccepted.Round(time.Millisecond), st["queue"])
	n := 0
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			if n++; n <= 5 || strings.Contains(line, "amqp-mux") {
				t.Logf("agent: %s", line)
			}
		}
	}
	t.Logf("agent warnings and errors: %d", n)
	t.Logf("VmHWM (kernel's peak RSS) %d KiB (%.1f MiB) after steady traffic, %d KiB (%.1f MiB) at the end; at the end RssAnon %d KiB, RssFile %d KiB; steady: RssAnon %d KiB, RssFile %d KiB",
		steadyStatus["VmHWM"], float64(steadyStatus["VmHWM"])/1024, endStatus["VmHWM"], float64(endStatus["VmHWM"])/1024,
		endStatus["RssAnon"], endStatus["RssFile"], steadyStatus["RssAnon"], steadyStatus["RssFile"])
	t.Logf("mid-burst (every burst message accepted): VmRSS %d KiB, RssAnon %d KiB, RssFile %d KiB",
		burstStatus["VmRSS"], burstStatus["RssAnon"], burstStatus["RssFile"])
	if hwm := max(peak, endStatus["VmHWM"]); hwm > 64<<10 {
		t.Errorf("peak RSS %d KiB is over the 64 MiB budget", hwm)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// leafIntake is how the measurement's leaves hand messages to the gateway.
type leafIntake interface {
	send(t *testing.T, leaf int, body string)
	flush(t *testing.T)
}

type lineConns struct {
	ids   []string
	conns []lineConn
	mu    []sync.Mutex
}

func (l *lineConns) send(_ *testing.T, leaf int, body string) {
	c := leaf % len(l.conns)
	l.mu[c].Lock()
	fmt.Fprintf(l.conns[c], "%s %s\n", l.ids[leaf], body)
	l.mu[c].Unlock()
}

func (l *lineConns) flush(t *testing.T) { flushLines(t, l.conns) }

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

// mqttLeaves are the measurement's plain-MQTT leaves: one paho client per leaf,
// connected to the gateway's local broker all along and subscribed to its own C2D topic.
type mqttLeaves struct {
	ids     []string
	clients []paho.Client
	c2d     atomic.Int64
	lost    atomic.Int64 // connections lost (logged: the first 5)
	mu      sync.Mutex
	pending []paho.Token
}

func dialLeaves(t *testing.T, addr string, ids []string) *mqttLeaves {
	t.Helper()
	l := &mqttLeaves{ids: ids, clients: make([]paho.Client, len(ids))}
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i, id := range ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
				SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetKeepAlive(60 * time.Second).
				SetConnectTimeout(30 * time.Second).
				// paho drops a connection whose PINGRESP takes over 10 s by default: on
				// these loaded shared cores that ended one run during the burst.
				SetPingTimeout(time.Minute).
				SetConnectionLostHandler(func(_ paho.Client, err error) {
					if l.lost.Add(1) <= 5 {
						t.Logf("leaf %s: connection lost: %v", id, err)
					}
				}))
			if tok := cl.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
				errs <- fmt.Errorf("leaf %s connect: %v", id, tok.Error())
				return
			}
			l.clients[i] = cl
			sub := cl.Subscribe("devices/"+id+"/messages/devicebound/#", 1, func(_ paho.Client, m paho.Message) {
				if string(m.Payload()) == "c2d-"+id {
					l.c2d.Add(1)
				}
			})
			if !sub.WaitTimeout(time.Minute) || sub.Error() != nil {
				errs <- fmt.Errorf("leaf %s subscribe: %v", id, sub.Error())
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, cl := range l.clients {
			if cl != nil {
				cl.Disconnect(0)
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return l
}

func (l *mqttLeaves) send(_ *testing.T, leaf int, body string) {
	tok := l.clients[leaf].Publish("devices/"+l.ids[leaf]+"/messages/events/", 1, false, body)
	l.mu.Lock()
	l.pending = append(l.pending, tok)
	l.mu.Unlock()
}

// flush waits until the broker acknowledged every message sent so far (it does so once
// the message is in the gateway's queue).
func (l *mqttLeaves) flush(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	pending := l.pending
	l.pending = nil
	l.mu.Unlock()
	for _, tok := range pending {
		if !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
			t.Fatalf("publish not acknowledged: %v", tok.Error())
		}
	}
}

func (l *mqttLeaves) c2dReceived() int { return int(l.c2d.Load()) }

func saveProfile(t *testing.T, url, file string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Logf("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Logf("profile %s: %v", file, err)
	}
}

// procStatus reads the KiB figures of /proc/PID/status (VmHWM, VmRSS, RssAnon, …).
func procStatus(pid int) map[string]int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if v, kb := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok && kb {
			out[k], _ = strconv.Atoi(v)
		}
	}
	return out
}
