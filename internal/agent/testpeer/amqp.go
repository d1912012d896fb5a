package testpeer

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/testbin"
)

// AMQPOptions configure the AMQP peer.
type AMQPOptions struct {
	// Hub is the IoT Hub host name tokens must be scoped to; HubName is its short name
	// that SASL PLAIN user names carry.
	Hub, HubName string
	Cert         Leaf
	// Keys are the devices' SAS keys (decoded), by device ID.
	Keys map[string][]byte
	// MaxMessageBytes is the largest telemetry body the peer accepts; a larger one is
	// rejected with amqp:link:message-size-exceeded, as IoT Hub rejects a message over
	// 256 KB. 0 means IoT Hub's 262,144.
	MaxMessageBytes int
}

// AMQPEvent is one line the peer reported.
type AMQPEvent struct {
	Event      string         `json:"event"`
	Mechanism  string         `json:"mechanism,omitempty"`
	User       string         `json:"user,omitempty"`
	OK         bool           `json:"ok"`
	Reason     string         `json:"reason,omitempty"`
	Device     string         `json:"device,omitempty"`
	Address    string         `json:"address,omitempty"`
	Body       string         `json:"body,omitempty"`
	Properties map[string]any `json:"properties,omitempty"`
	Renewal    bool           `json:"renewal,omitempty"`
	Port       int            `json:"port,omitempty"`
	Error      string         `json:"error,omitempty"`
}

// AMQPPeer is testdata/amqp-peer/peer.js (rhea) run with node.
type AMQPPeer struct {
	// Addr is where it listens (AMQP over TLS).
	Addr string

	stdin io.Writer // commands, one JSON line each

	mu     sync.Mutex
	events []AMQPEvent
}

// C2D asks the peer to send a cloud-to-device message to device on its open
// devicebound link; the peer reports a "c2d" event saying whether it could.
func (p *AMQPPeer) C2D(device, body string) error {
	line, _ := json.Marshal(map[string]any{"c2d": map[string]string{"device": device, "body": body}})
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.stdin.Write(append(line, '\n'))
	return err
}

// Release makes the peer settle device's next n telemetry messages as released instead
// of accepting them (AMQP's "not processed, send it again"); each is reported as a
// "released" event, not a "message" one. It returns once the peer has taken the
// command, so a message sent after that is released.
func (p *AMQPPeer) Release(tb testing.TB, device string, n int) {
	tb.Helper()
	p.arm(tb, "release", map[string]any{"device": device, "count": n})
}

// Reject makes the peer settle device's next telemetry message as rejected with the
// AMQP error condition (IoT Hub rejects while throttling, for one), reported as a
// "rejected" event whose Reason is the condition. It returns once the peer has taken
// the command.
func (p *AMQPPeer) Reject(tb testing.TB, device, condition string) {
	tb.Helper()
	p.arm(tb, "reject", map[string]any{"device": device, "condition": condition})
}

// arm sends the peer the command {name: args} and waits for its "<name>-armed" event.
func (p *AMQPPeer) arm(tb testing.TB, name string, args map[string]any) {
	tb.Helper()
	armed := len(p.Events(name + "-armed"))
	line, _ := json.Marshal(map[string]any{name: args})
	p.mu.Lock()
	_, err := p.stdin.Write(append(line, '\n'))
	p.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	WaitFor(tb, "the peer to take the "+name+" command", 10*time.Second, func() bool {
		return len(p.Events(name+"-armed")) > armed
	})
}

// RequireNode returns the node binary and the peer script, or skips the test (fails it
// when CI is set) if node or the peer's npm packages are missing.
func RequireNode(tb testing.TB) (node, script string) {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, "testdata", "amqp-peer")
	node, err = exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "rhea", "package.json"))
	}
	if err != nil {
		testbin.Missing(tb, fmt.Sprintf("the AMQP test peer needs node and rhea (%v); run: bash scripts/agent-test-deps.sh", err))
	}
	return node, filepath.Join(dir, "peer.js")
}

// StartAMQP starts the peer on loopback; it is killed when the test ends.
func StartAMQP(tb testing.TB, o AMQPOptions) *AMQPPeer {
	tb.Helper()
	node, script := RequireNode(tb)
	keys := make(map[string]string, len(o.Keys))
	for id, k := range o.Keys {
		keys[id] = base64.StdEncoding.EncodeToString(k)
	}
	cfg, _ := json.Marshal(map[string]any{
		"hub": o.Hub, "hubName": o.HubName, "certPem": o.Cert.CertPEM, "keyPem": o.Cert.KeyPEM, "keys": keys,
		"maxMessageBytes": o.MaxMessageBytes,
	})
	cmd := exec.Command(node, script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = &tbWriter{tb: tb, prefix: "amqp peer: "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill() // the process this test started, by its pid
		_ = cmd.Wait()
	})
	if _, err := stdin.Write(append(cfg, '\n')); err != nil {
		tb.Fatal(err)
	}
	p := &AMQPPeer{stdin: stdin}
	port := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var ev AMQPEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			if ev.Event == "listening" {
				port <- ev.Port
				continue
			}
			p.mu.Lock()
			p.events = append(p.events, ev)
			p.mu.Unlock()
		}
	}()
	select {
	case n := <-port:
		p.Addr = "127.0.0.1:" + strconv.Itoa(n)
	case <-time.After(20 * time.Second):
		tb.Fatal("AMQP peer did not start")
	}
	return p
}

// Events returns every event so far, optionally only those named kind.
func (p *AMQPPeer) Events(kind string) []AMQPEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []AMQPEvent
	for _, e := range p.events {
		if kind == "" || e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

type tbWriter struct {
	tb     testing.TB
	prefix string
}

func (w *tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(w.prefix + strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
