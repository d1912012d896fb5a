package intake_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// TestMQTTAcksOnlyStoredInOrder: two leaves publish 200 QoS 1 messages each without
// waiting (more than MaxUnstored in flight); every PUBACK they get is for a message
// already in the queue (the queue's PutAsync), and each leaf's messages are stored in
// the order it published them.
func TestMQTTAcksOnlyStoredInOrder(t *testing.T) {
	q, err := queue.Open(queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	leaves := intake.Leaves{"leaf-a": "", "leaf-b": ""}
	sink := &storedSink{Queue: q, stored: map[string]map[string]bool{"leaf-a": {}, "leaf-b": {}}}
	var _ intake.AsyncSink = sink
	b, err := intake.ListenMQTT(intake.MQTTOptions{Addr: "127.0.0.1:0", Leaves: leaves, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Serve() }()
	defer b.Close()

	const n = 200
	var wg sync.WaitGroup
	for id := range leaves {
		wg.Go(func() {
			cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).
				SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
			if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Errorf("connect %s: %v", id, tok.Error())
				return
			}
			defer cl.Disconnect(0)
			toks := make([]paho.Token, n)
			for i := range n {
				toks[i] = cl.Publish(intake.EventsTopic(id), 1, false, fmt.Sprint(i))
			}
			for i, tok := range toks {
				if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
					t.Errorf("%s message %d: not acknowledged: %v", id, i, tok.Error())
					return
				}
				if !sink.has(id, fmt.Sprint(i)) {
					t.Errorf("%s message %d acknowledged before it was stored", id, i)
				}
			}
		})
	}
	wg.Wait()
	for id := range leaves {
		for i := range n {
			r, ok, err := q.Peek(id)
			if err != nil || !ok || string(r.Message.Body) != fmt.Sprint(i) {
				t.Fatalf("%s: stored message %d: got %q (ok %v, err %v), want %q", id, i, r.Message.Body, ok, err, fmt.Sprint(i))
			}
			q.Ack(id, r.Seq)
		}
	}
	if st := b.Stats(); st.Accepted != 2*n || st.Failed != 0 {
		t.Errorf("broker stats: got %+v, want %d accepted, none failed", st, 2*n)
	}
}

// storedSink is the queue, noting each message the queue reports stored before the
// broker hears of it.
type storedSink struct {
	*queue.Queue
	mu     sync.Mutex
	stored map[string]map[string]bool
}

func (s *storedSink) PutAsync(leaf string, m telemetry.Message, done func(error)) {
	s.Queue.PutAsync(leaf, m, func(err error) {
		if err == nil {
			s.mu.Lock()
			s.stored[leaf][string(m.Body)] = true
			s.mu.Unlock()
		}
		done(err)
	})
}

func (s *storedSink) has(leaf, body string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored[leaf][body]
}
