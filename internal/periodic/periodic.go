// Package periodic runs a task at a fixed interval until its context ends: the ticker
// loop the gateway's stats log and the issuer key ring's reload (and the service's nonce
// key reload) each wrote out.
package periodic

import (
	"context"
	"time"
)

// Run calls f every interval (first after one interval) until ctx ends, and returns
// nil then. A call in progress delays the next; ticks missed meanwhile are dropped.
func Run(ctx context.Context, interval time.Duration, f func(context.Context)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f(ctx)
		}
	}
}
