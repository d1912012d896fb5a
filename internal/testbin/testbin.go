// Package testbin holds the rule for the external programs tests run (Vault,
// redis-server): a test whose program is missing skips outside CI and fails under CI
// (CI set), so a misconfigured pipeline cannot pass by skipping.
package testbin

import (
	"os"
	"testing"
)

// Missing ends tb because its program is missing: Fatal under CI, Skip elsewhere; msg
// says how to provide it.
func Missing(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}
