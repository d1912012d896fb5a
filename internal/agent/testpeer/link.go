package testpeer

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// SendUntil sends numbered messages to msgs (body "m0", "m1", …, property seq the same
// number), about one every 20 ms, until done holds, and returns how many it sent: the
// link tests' load across token changes. After 60 s it fails tb with status(), which
// says what was awaited and what the link saw.
func SendUntil(tb testing.TB, msgs chan<- telemetry.Message, done func() bool, status func() string) int {
	tb.Helper()
	sent := 0
	deadline := time.After(60 * time.Second)
	for !done() {
		select {
		case msgs <- telemetry.Message{Body: []byte("m" + strconv.Itoa(sent)), Properties: map[string]string{"seq": strconv.Itoa(sent)}}:
			sent++
		case <-deadline:
			tb.Fatalf("after 60 s: %s", status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sent
}

// WaitFor polls cond every 20 ms until it holds; after within it fails tb, naming
// what was awaited.
func WaitFor(tb testing.TB, what string, within time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Run runs run (a link's or a sink's Run) in a goroutine until stop or the end of the
// test; stop cancels it and returns what it returned.
func Run(tb testing.TB, run func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	tb.Cleanup(cancel)
	return func() error { cancel(); return <-done }
}
