package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// agent is one tokenagent started through run, as main starts it.
type agent struct {
	stdin  *io.PipeWriter
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

func mustStartAgent(t *testing.T, args []string) *agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	a := &agent{stdin: pw, stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- run(ctx, args, func(string) string { return "" }, pr, a.stdout, a.stderr) }()
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", a.stderr.String())
		}
	})
	return a
}

// stop cancels the agent like SIGTERM and returns its final statistics.
func (a *agent) stop(t *testing.T) map[string]map[string]int {
	t.Helper()
	if a.cancel == nil {
		return nil
	}
	a.cancel()
	a.cancel = nil
	a.stdin.Close()
	select {
	case err := <-a.done:
		if err != nil {
			t.Errorf("run: got %v, want a clean exit", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop within 15 s")
	}
	return finalStats(t, a.stderr.String())
}

// finalStats reads the counters from the agent's "stopped" log line.
func finalStats(t *testing.T, log string) map[string]map[string]int {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &rec) != nil || string(rec["msg"]) != `"stopped"` {
			continue
		}
		out := map[string]map[string]int{}
		for k, v := range rec {
			var m map[string]int
			if json.Unmarshal(v, &m) == nil {
				out[k] = m
			}
		}
		return out
	}
	t.Fatal("no stopped line in the agent log")
	return nil
}

// publisher writes numbered JSON telemetry lines to the agent until stopped.
type publisher struct {
	mu   sync.Mutex
	sent int
	stop chan struct{}
	done chan struct{}
}

func startPublisher(w io.Writer, every time.Duration) *publisher {
	return startPublisherAt(w, 0, every)
}

func (p *publisher) halt() int {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// assertAllArrived checks that messages with seq 0..n-1 all reached the broker.
func assertAllArrived(t *testing.T, b *testpeer.MQTTBroker, from, n int) {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range b.Published() {
		seen[p.Properties.Get("seq")] = true
		if ct := p.Properties.Get("$.ct"); ct != "application/json" {
			t.Fatalf("message %s: $.ct got %q, want application/json", p.Payload, ct)
		}
	}
	missing := 0
	for i := from; i < n; i++ {
		if !seen[strconv.Itoa(i)] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of messages %d..%d never reached the broker", missing, from, n-1)
	}
}

func agentArgs(f *testpeer.Fixture, state string, extra ...string) []string {
	return append([]string{
		"-service-url", f.Service.URL, "-ca-file", f.CAFile, "-device-id", f.DeviceID,
		"-credential-file", f.SecretFile, "-state-dir", state, "-boot-splay", "0",
		"-backoff-min", "200ms", "-backoff-max", "1s", "-log-level", "debug",
	}, extra...)
}

// TestAgentEndToEndMQTT runs tokensvc (embedded store, real HTTP API, 20-second tokens),
// the agent through run, and an MQTT broker that checks tokens like IoT Hub and drops a
// connection the moment its token expires. Telemetry flows the whole time; the token is
// refreshed and the link reconnected several times; in the middle the service goes
// down (connections refused, then 503 with Retry-After) across a refresh point, and the
// agent must keep its valid token, retry with backoff and recover before the token
// expires. Then the agent restarts with the service still down and must go on with the
// token it persisted. Every message must arrive, no connection may be refused or dropped
// for an expired token, and no secret may reach the agent's log.
func TestAgentEndToEndMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("about 80 s of real time")
	}
	const ttl = 30 * time.Second
	f := testpeer.NewFixture(t, "pump-0001", ttl, domain.Hub{})
	broker := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS,
		Keys: map[string][]byte{f.DeviceID: f.Key}})
	state := filepath.Join(f.Dir, "state")
	sock := filepath.Join(f.Dir, "token.sock")
	tmplFile := filepath.Join(f.Dir, "cs.tmpl")
	csFile := filepath.Join(f.Dir, "out", "connection-string")
	if err := os.WriteFile(tmplFile, []byte(`{{ deref .ConnectionString }}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(csFile), 0o700); err != nil {
		t.Fatal(err)
	}
	args := agentArgs(f, state, "-link", "mqtt", "-broker-addr", broker.TLSAddr, "-telemetry", "stdin",
		"-telemetry-format", "json", "-property", "$.ct=application/json", "-c2d", "stdout",
		"-socket", sock, "-template", tmplFile+":"+csFile+":0640")

	start := time.Now()
	a := mustStartAgent(t, args)
	pub := startPublisher(a.stdin, 25*time.Millisecond)
	issued := func() int { return f.Service.Issued() }

	// One refresh in normal operation.
	testpeer.WaitFor(t, "a refresh", 2*ttl, func() bool { return issued() >= 2 })

	// The brownfield outputs follow the token.
	checkSinks(t, f, sock, csFile)
	// The broker keeps no C2D queue (IoT Hub does): send until the device has it.
	testpeer.WaitFor(t, "C2D on stdout", 10*time.Second, func() bool {
		if err := broker.C2D(f.DeviceID, []byte(`{"cmd":"reboot"}`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		return strings.Contains(a.stdout.String(), `reboot`)
	})

	// An outage across the next refresh point (75-80 % of the lifetime): 503 with
	// Retry-After (as while the key store is down) from 72 % until the agent has been
	// refused once that way, then connections refused until it has met that too, then
	// back. The phases follow the agent's attempts, not the clock: its wait after a 503
	// (Retry-After plus jitter) could otherwise step over a fixed window. The token
	// expires at 100 %, and the broker drops the link the moment it does: the agent must
	// hold on to its token, retry and recover in time.
	n := issued()
	testpeer.WaitFor(t, "next refresh", 2*ttl, func() bool { return issued() > n })
	refreshed := time.Now()
	time.Sleep(time.Until(refreshed.Add(ttl * 72 / 100)))
	f.Service.SetUnavailable(true)
	testpeer.WaitFor(t, "a 503 at the refresh point", ttl/4, func() bool { return strings.Contains(a.stderr.String(), "HTTP 503") })
	f.Service.SetUnavailable(false)
	f.Service.Down()
	down := time.Since(refreshed)
	testpeer.WaitFor(t, "a refused connection", ttl/4, func() bool { return strings.Contains(a.stderr.String(), "connection refused") })
	f.Service.Up()
	up := time.Since(refreshed)
	n = issued()
	testpeer.WaitFor(t, "refresh after the outage", ttl, func() bool { return issued() > n })
	t.Logf("outage from +%v (503) and +%v (refused) to +%v after a refresh; new token at +%v; the old one expired at about +%v",
		ttl*72/100, down.Round(time.Millisecond), up.Round(time.Millisecond), time.Since(refreshed).Round(time.Millisecond), ttl)

	// One more normal refresh, then stop.
	n = issued()
	testpeer.WaitFor(t, "a refresh after recovery", 2*ttl, func() bool { return issued() > n })
	time.Sleep(time.Second)
	sent := pub.halt()
	testpeer.WaitFor(t, "all messages at the broker", 10*time.Second, func() bool { return len(broker.Published()) >= sent })
	stats := a.stop(t)
	run1 := time.Since(start)

	// Reboot while the service is down: the persisted token carries on.
	if fi, err := os.Stat(filepath.Join(state, "token.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("persisted token: %v %v, want mode 0600", fi, err)
	}
	f.Service.Down()
	accepted := broker.Stats().Accepted
	a2 := mustStartAgent(t, args)
	pub2 := startPublisherAt(a2.stdin, sent, 25*time.Millisecond)
	testpeer.WaitFor(t, "reconnect with the persisted token", 10*time.Second, func() bool { return broker.Stats().Accepted > accepted })
	time.Sleep(time.Second)
	sent2 := pub2.halt()
	testpeer.WaitFor(t, "messages after the reboot", 10*time.Second, func() bool { return len(broker.Published()) >= sent2 })
	stats2 := a2.stop(t)

	assertAllArrived(t, broker, 0, sent2)
	bs := broker.Stats()
	if len(bs.Refused) != 0 || bs.ExpiredDrops != 0 || bs.Denied != 0 {
		t.Errorf("broker: got %+v, want no refused connection, no drop for an expired token, no ACL denial", bs)
	}
	keeper, mqtt := stats["keeper"], stats["mqtt"]
	// The outage: at least one 503 and at least one refused connection (its phases wait
	// for each).
	if keeper["Failed"] < 2 {
		t.Errorf("keeper failures: got %d, want ≥ 2 (the outage)", keeper["Failed"])
	}
	if mqtt["Rotations"] < 3 {
		t.Errorf("reconnects for a new token: got %d, want ≥ 3", mqtt["Rotations"])
	}
	if stats2["keeper"]["Reused"] != 1 {
		t.Errorf("after the reboot: got %v, want the persisted token reused", stats2["keeper"])
	}
	logs := a.stderr.String() + a2.stderr.String()
	for _, want := range []string{`HTTP 503`, `connection refused`, `"msg":"token service reachable again"`, `"msg":"reusing saved token"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("agent log lacks %s", want)
		}
	}
	assertNoSecrets(t, logs+a.stdout.String(), f, broker.Tokens())
	t.Logf("run 1 (%v): %d messages; tokens issued %d (boot + %d refreshes); keeper %v; mqtt %v",
		run1.Round(time.Second), sent, f.Service.Issued(), keeper["Fetched"]-1, keeper, mqtt)
	t.Logf("run 2 (reboot, service down): %d more messages; keeper %v; mqtt %v", sent2-sent, stats2["keeper"], stats2["mqtt"])
	t.Logf("broker: %+v", bs)
}

// startPublisherAt writes lines numbered from from on, every apart.
func startPublisherAt(w io.Writer, from int, every time.Duration) *publisher {
	p := &publisher{sent: from, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			p.mu.Lock()
			n := p.sent
			p.mu.Unlock()
			line := fmt.Sprintf(`{"body":{"seq":%d,"temp":21.5},"properties":{"seq":"%d"}}`+"\n", n, n)
			if _, err := w.Write([]byte(line)); err != nil {
				return
			}
			p.mu.Lock()
			p.sent++
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return p
}

// checkSinks reads the token from the Unix socket and the rendered template file and
// checks both carry a token that verifies with the device key.
func checkSinks(t *testing.T, f *testpeer.Fixture, sock, csFile string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://agent/token")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /token on the socket: got %d", resp.StatusCode)
	}
	if _, err := signer.Verify(strings.TrimSpace(string(b)), f.Key, time.Now()); err != nil {
		t.Errorf("token from the socket: %v", err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: got %v %v, want 0600", fi, err)
	}
	testpeer.WaitFor(t, "template output", 5*time.Second, func() bool { _, err := os.Stat(csFile); return err == nil })
	cs, err := os.ReadFile(csFile)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, ok := strings.Cut(string(cs), ";SharedAccessSignature=")
	if !strings.HasPrefix(string(cs), "HostName="+testpeer.Hub+";DeviceId="+f.DeviceID+";") || !ok {
		t.Fatalf("connection string file: got a value without the expected shape")
	}
	if _, err := signer.Verify(tok, f.Key, time.Now()); err != nil {
		t.Errorf("token in the connection string file: %v", err)
	}
	if fi, _ := os.Stat(csFile); fi.Mode().Perm() != 0o640 {
		t.Errorf("template output mode: got %v, want 0640", fi.Mode().Perm())
	}
}

// assertNoSecrets fails if the log holds the device secret, the SAS key or any token
// (or its signature) the agent used.
func assertNoSecrets(t *testing.T, log string, f *testpeer.Fixture, tokens []string) {
	t.Helper()
	if len(tokens) == 0 || !strings.Contains(log, `"msg":"token fetched"`) {
		t.Fatal("nothing to scan: no tokens or no agent log")
	}
	secrets := map[string]string{
		"device secret": f.Secret,
		"SAS key":       base64.StdEncoding.EncodeToString(f.Key),
	}
	for i, tok := range tokens {
		secrets["token "+strconv.Itoa(i)] = tok
		if p, err := signer.Parse(tok); err == nil {
			secrets["signature of token "+strconv.Itoa(i)] = p.Signature
			secrets["encoded signature of token "+strconv.Itoa(i)] = signer.Escape(p.Signature)
		}
	}
	for name, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the agent's output contains the %s", name)
		}
	}
}
