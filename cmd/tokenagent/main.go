// Command tokenagent is the device agent: it gets short-lived SAS tokens from tokensvc,
// keeps a valid one (refresh, backoff, persistence), hands it to legacy software (files,
// a child process's environment, a Unix socket) and uses it itself to send telemetry to
// IoT Hub over MQTT or AMQP. See README.md beside this file.
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
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tokenagent:", err)
		os.Exit(1)
	}
}
