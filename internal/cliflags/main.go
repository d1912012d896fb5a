package cliflags

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// ErrUsage is a wrong command line whose usage text was printed already: Main exits
// with status 1 without printing it again.
var ErrUsage = errors.New("usage")

// Main is the whole main function of a binary: it calls run with a context cancelled
// by SIGINT or SIGTERM and, when run fails, prints "name: error" on stderr (unless the
// error is ErrUsage) and exits with status 1.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		if !errors.Is(err, ErrUsage) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		}
		os.Exit(1)
	}
}

// MainArgs is Main for a binary whose run takes what tests give it instead of the
// process's own: the arguments after the program name, the environment and the output
// streams.
func MainArgs(name string, run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error) {
	Main(name, func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	})
}
