// Command tokenbench drives a running tokensvc on loopback with many simulated HS256
// devices — a fresh assertion per GET /token over keep-alive connections — and, in the
// same run, a bare net/http handler that returns a body of the same size, and reports
// throughput, p50/p95/p99 latency, deliberate refusals (429/503 with Retry-After, which
// it honours) and errors by status, with the ratio tokensvc/baseline. See BENCHMARKS.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tokenbench:", err)
		os.Exit(1)
	}
}
