package version

import (
	"strings"
	"testing"
)

func TestStringNamesBinaryAndGoVersion(t *testing.T) {
	got := String("tokensvc")
	if !strings.HasPrefix(got, "tokensvc ") {
		t.Fatalf("got %q, want it to start with the binary name", got)
	}
	if !strings.Contains(got, "go1.") {
		t.Fatalf("got %q, want the Go version in it", got)
	}
}
