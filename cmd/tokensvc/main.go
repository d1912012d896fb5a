// Command tokensvc is the credential broker: it keeps device keys in a store (an
// encrypted local file by default) and mints short-lived SAS tokens for devices that
// prove who they are. Configuration: flags or TOKENSVC_* environment variables; see
// the README.
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
		fmt.Fprintln(os.Stderr, "tokensvc:", err)
		os.Exit(1)
	}
}
