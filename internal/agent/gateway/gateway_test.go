package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/gateway"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

var quick = backoff.Policy{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}

// rig is a running gateway for a test.
type rig struct {
	gw     *gateway.Gateway
	logs   *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// wait ends Run and returns its error; later calls return the same.
func (r *rig) wait() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

func (r *rig) stop(t *testing.T) {
	t.Helper()
	if err := r.wait(); err != nil {
		t.Fatalf("gateway Run: got %v, want nil", err)
	}
}

// startGateway runs a gateway over f with o (leaves, batcher and queue filled in when
// empty) until the test ends or stop.
func startGateway(t *testing.T, f *testpeer.GatewayFixture, queueDir string, limit int, o gateway.Options) *rig {
	t.Helper()
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	q, err := queue.Open(queue.Options{Path: filepath.Join(queueDir, "queue.db"), Limit: limit, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if o.Leaves == nil {
		o.Leaves = intake.Leaves{}
		for _, id := range f.Leaves {
			o.Leaves[id] = ""
		}
	}
	o.Batcher, o.Queue, o.RootCAs, o.Backoff, o.Timeout, o.Logger = f.Fetcher(t), q, f.CA.Pool(), quick, 5*time.Second, log
	gw, err := gateway.New(o)
	if err != nil {
		q.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{gw: gw, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- gw.Run(ctx) }()
	t.Cleanup(func() { _ = r.wait() })
	return r
}

// leafClient is a legacy leaf speaking plain MQTT 3.1.1 to the gateway's local broker.
type leafClient struct {
	cl paho.Client
	mu sync.Mutex
	rx []string
}

func connectLeaf(t *testing.T, addr, id, password string) (*leafClient, error) {
	t.Helper()
	lc := &leafClient{}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetPassword(password).SetUsername(id).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	lc.cl = paho.NewClient(opts)
	tok := lc.cl.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { lc.cl.Disconnect(0) })
	return lc, nil
}

func (lc *leafClient) subscribe(t *testing.T, filter string) {
	t.Helper()
	tok := lc.cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		lc.mu.Lock()
		lc.rx = append(lc.rx, m.Topic()+" "+string(m.Payload()))
		lc.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (lc *leafClient) received() []string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return append([]string(nil), lc.rx...)
}

// publish sends body to topic at QoS 1 and reports whether the broker acknowledged it.
func (lc *leafClient) publish(topic, body string) bool {
	tok := lc.cl.Publish(topic, 1, false, body)
	return tok.WaitTimeout(3*time.Second) && tok.Error() == nil
}

func sendLine(t *testing.T, network, addr, line string) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
}

// bodies returns the peer's accepted message bodies by device.
func amqpBodies(p *testpeer.AMQPPeer) map[string][]string {
	out := map[string][]string{}
	for _, e := range p.Events("message") {
		out[e.Device] = append(out[e.Device], e.Body)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasAll(got []string, want ...string) bool {
	for _, w := range want {
		if !contains(got, w) {
			return false
		}
	}
	return true
}

func noSecretsIn(t *testing.T, logs string, tokens []string) {
	t.Helper()
	for _, tok := range tokens {
		if tok != "" && strings.Contains(logs, tok) {
			t.Fatal("a token appears in the gateway's logs")
		}
	}
	if strings.Contains(logs, "SharedAccessSignature") || strings.Contains(logs, "sig=") {
		t.Fatal("a SAS token appears in the gateway's logs")
	}
}
