package main

import (
	"io"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/cliflags"
)

// TestREADMEConfigurationTable holds the README's configuration table and the flag set
// to each other, both ways: flag names, environment names, defaults and the
// environment-only secrets.
func TestREADMEConfigurationTable(t *testing.T) {
	fresh := func() *cliflags.Set {
		c := app.Defaults()
		return flagSet(&c, io.Discard)
	}
	for _, err := range cliflags.CheckDocFile("../../README.md", "## Configuration", fresh) {
		t.Errorf("README.md: %v", err)
	}
}

func TestVersionFlag(t *testing.T) {
	var out strings.Builder
	// A bad environment does not stand in the way of -version.
	env := map[string]string{"TOKENSVC_DEVICE_RATE": "fast"}
	if err := run(t.Context(), []string{"-version"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "tokensvc ") {
		t.Errorf("got %q, want a line starting with %q", got, "tokensvc ")
	}
}
