package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/heapfloor"
	"github.com/tokensvc/tokensvc/internal/version"
)

// run is the whole program; main only wires signals and the process environment to it.
// It parses the configuration, builds the service, and serves until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	switch {
	case errors.Is(err, cliflags.ErrVersion):
		_, err := fmt.Fprintln(stdout, version.String("tokensvc"))
		return err
	case errors.Is(err, flag.ErrHelp):
		return nil
	case err != nil:
		return err
	}
	defer heapfloor.Start(uint64(cfg.GCHeapFloorMiB) << 20)()
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := app.New(ctx, cfg, app.WithLogger(log), app.WithStdout(stdout))
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return a.Serve(ctx, ln)
}
