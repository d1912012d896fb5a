// Package testbin holds the rule for the external programs tests run (Vault,
// redis-server, node for the AMQP peer, python3 for the examples): a test whose
// program is missing skips outside CI and fails under CI (CI set), so a misconfigured
// pipeline cannot pass by skipping. Process runs such a program for a test server.
package testbin

import (
	"os"
	"os/exec"
	"testing"
)

// Find returns the program named by the environment variable env or, when pathName is
// not empty, the one of that name on PATH; otherwise it ends tb with Missing(msg).
func Find(tb testing.TB, env, pathName, msg string) string {
	tb.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if pathName != "" {
		if p, err := exec.LookPath(pathName); err == nil {
			return p
		}
	}
	Missing(tb, msg)
	return ""
}

// Missing ends tb because its program is missing: Fatal under CI, Skip elsewhere; msg
// says how to provide it.
func Missing(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}
