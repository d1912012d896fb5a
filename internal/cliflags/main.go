package cliflags

import (
	"context"
	"errors"
	"fmt"
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
