// Command tokenagent is the device agent: it gets short-lived SAS tokens from tokensvc,
// keeps a valid one (refresh, backoff, persistence), hands it to legacy software (files,
// a child process's environment, a Unix socket) and uses it itself to send telemetry to
// IoT Hub over MQTT or AMQP. See README.md beside this file.
package main

import (
	"context"
	"os"

	"github.com/tokensvc/tokensvc/internal/cliflags"
)

func main() {
	cliflags.Main("tokenagent", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	})
}
