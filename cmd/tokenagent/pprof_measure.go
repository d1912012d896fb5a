//go:build gwpprof

package main

import (
	"net/http"
	_ "net/http/pprof" // only in the measurement build (-tags gwpprof)
	"os"
)

// In a binary built with -tags gwpprof (the scale measurement's, on request),
// TOKENAGENT_PPROF names a loopback address serving net/http/pprof, so the
// measurement can take a heap profile of the gateway under load.
func init() {
	if addr := os.Getenv("TOKENAGENT_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
