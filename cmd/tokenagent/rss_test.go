package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
)

// TestAgentBinaryRSS builds the static binary, runs it as its own process publishing
// to the test broker for ~20 s (two token rotations) and reports its resident memory.
// It is a measurement, so it runs only with TOKENAGENT_MEASURE_RSS=1.
func TestAgentBinaryRSS(t *testing.T) {
	if os.Getenv("TOKENAGENT_MEASURE_RSS") == "" {
		t.Skip("set TOKENAGENT_MEASURE_RSS=1 to measure the agent's memory")
	}
	bin := filepath.Join(t.TempDir(), "tokenagent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f := testpeer.NewFixture(t, "rss-probe", 8*time.Second, domain.Hub{})
	broker := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS,
		Keys: map[string][]byte{f.DeviceID: f.Key}})
	cmd := exec.Command(bin, agentArgs(f, filepath.Join(f.Dir, "state"), "-link", "mqtt", "-broker-addr", broker.TLSAddr,
		"-telemetry", "stdin", "-log-level", "info")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt) // the process this test started
		_ = cmd.Wait()
	}()
	var peak, last int
	sent := 0
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		for range 20 {
			fmt.Fprintf(stdin, "reading %d temp=21.%d\n", sent, sent%10)
			sent++
		}
		time.Sleep(100 * time.Millisecond)
		if kb := vmRSS(t, cmd.Process.Pid); kb > 0 {
			last, peak = kb, max(peak, kb)
		}
	}
	testpeer.WaitFor(t, "messages at the broker", 10*time.Second, func() bool { return len(broker.Published()) >= sent })
	t.Logf("agent binary publishing %d messages (~200/s) over MQTT/TLS with 8-second tokens: VmRSS last %d KiB, peak %d KiB; broker %+v",
		sent, last, peak, broker.Stats())
}

func vmRSS(t *testing.T, pid int) int {
	fh, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}
