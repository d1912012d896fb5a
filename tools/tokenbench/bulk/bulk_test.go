package bulk

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	admin := map[string]string{"TOKENSVC_ADMIN_TOKEN": "a"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"defaults", nil, admin, ""},
		{"no admin token", nil, nil, "TOKENSVC_ADMIN_TOKEN"},
		{"off the machine", []string{"-url", "http://example.com"}, admin, "loopback"},
		{"too many devices", []string{"-n", "2000000"}, admin, "-n"},
		{"raw without a Vault token", []string{"-raw-kv", "16", "-vault-addr", "http://127.0.0.1:8200"}, nil, "VAULT_TOKEN"},
		{"raw off the machine", []string{"-raw-kv", "16", "-vault-addr", "http://vault.example.com"}, map[string]string{"VAULT_TOKEN": "v"}, "loopback"},
		{"random order", []string{"-order", "random"}, admin, ""},
		{"unknown order", []string{"-order", "sorted"}, admin, "-order"},
		{"raw", []string{"-raw-kv", "16", "-vault-addr", "http://127.0.0.1:8200"}, map[string]string{"VAULT_TOKEN": "v"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(tt.args, env(tt.env), io.Discard)
			if tt.wantErr == "" {
				if err != nil || !strings.HasPrefix(c.Prefix, "imp-") {
					t.Fatalf("got %v (prefix %q), want no error and a generated prefix", err, c.Prefix)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestIDNumbers: either order names every device of 0..n-1 exactly once, so a random
// import creates the same devices as a sequential one; the random order is the same in
// every run and is not the sequential one.
func TestIDNumbers(t *testing.T) {
	const n = 1000
	for _, order := range []string{"sequential", "random"} {
		t.Run(order, func(t *testing.T) {
			number, again := idNumbers(n, order), idNumbers(n, order)
			seen := make([]bool, n)
			inPlace := 0
			for i := range n {
				k := number(i)
				if k < 0 || k >= n || seen[k] {
					t.Fatalf("line %d: number %d out of range or repeated", i, k)
				}
				seen[k] = true
				if again(i) != k {
					t.Fatalf("line %d: %d, then %d in a second run", i, k, again(i))
				}
				if k == i {
					inPlace++
				}
			}
			if want := order == "sequential"; (inPlace == n) != want {
				t.Fatalf("%d of %d lines keep their own number", inPlace, n)
			}
		})
	}
}

// TestIDsAfterAPreload: an import with a suffix and a stride after a preload of
// stride × n devices puts each new ID right after a preloaded one (in byte order, as
// the store keeps them), spread over the whole preloaded range.
func TestIDsAfterAPreload(t *testing.T) {
	pre := Config{Prefix: "imp-x-", Stride: 1}
	add := Config{Prefix: "imp-x-", Stride: 10, Suffix: "b"}
	ids := []string{}
	for i := range 100 {
		ids = append(ids, pre.deviceID(i))
	}
	for i := range 10 {
		ids = append(ids, add.deviceID(i))
	}
	slices.Sort(ids)
	for i := range 10 {
		at := slices.Index(ids, add.deviceID(i))
		if at < 1 || ids[at-1] != pre.deviceID(i*10) {
			t.Errorf("%s sorts at %d, not right after %s", add.deviceID(i), at, pre.deviceID(i*10))
		}
	}
	if last := add.deviceID(9); last != "imp-x-0000090b" {
		t.Errorf("the last new ID: got %s, want imp-x-0000090b (spread over the preloaded range)", last)
	}
}
