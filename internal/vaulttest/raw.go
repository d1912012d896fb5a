package vaulttest

import (
	"context"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"
)

// MountKV mounts a KV v2 engine at path and waits until it answers.
func (s *Server) MountKV(tb testing.TB, path string) {
	tb.Helper()
	s.mount(tb, path, &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	s.waitKVAt(tb, path)
}

// DropVersionData deletes, through sys/raw, the version data of every record in the
// KV v2 engine at mount, leaving their metadata: the state a KV v2 metadata delete
// leaves when it is interrupted between the two (it deletes the versions first). Reads
// of those records then fail with a 500, "could not find version data". It needs a
// dev server (Start), which enables sys/raw, and returns how many versions it deleted.
func (s *Server) DropVersionData(tb testing.TB, mount string) int {
	tb.Helper()
	c := s.Client(tb)
	m, err := c.Sys().GetMountWithContext(context.Background(), mount)
	if err != nil {
		tb.Fatalf("read mount %s: %v", mount, err)
	}
	n := 0
	var walk func(dir string, inVersions bool)
	walk = func(dir string, inVersions bool) {
		sec, err := c.Logical().ListWithContext(context.Background(), "sys/raw/"+dir)
		if err != nil {
			tb.Fatalf("list sys/raw/%s: %v", dir, err)
		}
		if sec == nil {
			return
		}
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			switch {
			case strings.HasSuffix(name, "/"):
				walk(dir+name, inVersions || name == "versions/")
			case inVersions:
				if _, err := c.Logical().DeleteWithContext(context.Background(), "sys/raw/"+dir+name); err != nil {
					tb.Fatalf("delete sys/raw/%s%s: %v", dir, name, err)
				}
				n++
			}
		}
	}
	walk("logical/"+m.UUID+"/", false)
	return n
}
