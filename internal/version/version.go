// Package version reports the build a binary came from, for every binary's -version flag.
package version

import (
	"fmt"
	"runtime/debug"
)

// String returns the module version (or "devel") followed by the VCS revision and
// whether the tree was modified, as recorded by the Go toolchain at build time.
func String(binary string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return binary + " (no build information)"
	}
	v := info.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		return fmt.Sprintf("%s %s (%s%s, %s)", binary, v, rev, modified, info.GoVersion)
	}
	return fmt.Sprintf("%s %s (%s)", binary, v, info.GoVersion)
}
