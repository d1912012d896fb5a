// Command tokenctl is the operator CLI for tokensvc: devices (add, list, get, rotate,
// revoke, import) and hubs (add, list, get), over the generated API client. The server
// comes from TOKENSVC_URL (default http://localhost:8080), the admin token from
// TOKENSVC_ADMIN_TOKEN; see `tokenctl help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "tokenctl:", err)
		}
		os.Exit(1)
	}
}
