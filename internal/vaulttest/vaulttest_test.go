package vaulttest_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestMounts checks that both kinds of server offer what the stores expect: KV v2 at
// secret/ and Transit at transit/, usable with the root token.
func TestMounts(t *testing.T) {
	tests := []struct {
		name  string
		start func(testing.TB) *vaulttest.Server
	}{
		{"dev", vaulttest.Start},
		{"persistent", vaulttest.StartPersistent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.start(t)
			c := srv.Client(t)
			ctx := t.Context()
			if _, err := c.KVv2("secret").Put(ctx, "probe", map[string]any{"v": "1"}); err != nil {
				t.Fatalf("KV v2 write: %v", err)
			}
			got, err := c.KVv2("secret").Get(ctx, "probe")
			if err != nil || got.Data["v"] != "1" {
				t.Fatalf("KV v2 read: got %v, %v; want v=1", got, err)
			}
			if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/probe", nil); err != nil {
				t.Fatalf("create Transit key: %v", err)
			}
			if _, err := c.Logical().WriteWithContext(ctx, "transit/hmac/probe", map[string]any{"input": "aGk="}); err != nil {
				t.Fatalf("Transit HMAC: %v", err)
			}
			// Output goes into failure logs: the root token must not.
			if strings.Contains(srv.Output(), srv.RootToken) {
				t.Error("Output contains the root token")
			}
		})
	}
}

// TestPersistentKillRestart kills a persistent server, checks that its port refuses
// connections, restarts it, and checks that records, Transit keys and a renewable
// token all survived, on the same address.
func TestPersistentKillRestart(t *testing.T) {
	srv := vaulttest.StartPersistent(t)
	ctx := t.Context()
	root := srv.Client(t)
	if _, err := root.KVv2("secret").Put(ctx, "kept", map[string]any{"v": "before"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/kept", nil); err != nil {
		t.Fatal(err)
	}
	hmacOf := func(c *vault.Client) string {
		t.Helper()
		s, err := c.Logical().WriteWithContext(ctx, "transit/hmac/kept", map[string]any{"input": "aGk="})
		if err != nil {
			t.Fatalf("Transit HMAC: %v", err)
		}
		return s.Data["hmac"].(string)
	}
	macBefore := hmacOf(root)
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{TTL: "1h", Policies: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	user := srv.Client(t)
	user.SetToken(tok.Auth.ClientToken)

	srv.Kill()
	u, _ := url.Parse(srv.Addr)
	if conn, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		conn.Close()
		t.Fatal("the killed server's port still accepts connections")
	}
	_, err = root.KVv2("secret").Get(ctx, "kept")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("read from the killed server: got %v, want connection refused", err)
	}
	srv.Kill() // killing twice is harmless

	start := time.Now()
	srv.Restart(t)
	t.Logf("restart to unsealed and serving: %v", time.Since(start).Round(time.Millisecond))
	got, err := root.KVv2("secret").Get(ctx, "kept")
	if err != nil || got.Data["v"] != "before" {
		t.Fatalf("record after restart: got %v, %v; want v=before", got, err)
	}
	if mac := hmacOf(root); mac != macBefore {
		t.Error("Transit key after restart computes a different HMAC")
	}
	if _, err := user.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		t.Fatalf("token created before the kill: %v", err)
	}
	renewed, err := user.Auth().Token().RenewSelfWithContext(ctx, 3600)
	if err != nil || renewed.Auth == nil || renewed.Auth.LeaseDuration <= 0 {
		t.Fatalf("renew the token after restart: %v", err)
	}
	// And again: a restarted server can be killed and restarted like the first.
	srv.Kill()
	srv.Restart(t)
	if _, err := root.KVv2("secret").Get(ctx, "kept"); err != nil {
		t.Fatalf("record after a second restart: %v", err)
	}
}

// TestPauseResume checks the frozen-server outage the dev server stages: requests time
// out while paused and succeed again after Resume.
func TestPauseResume(t *testing.T) {
	srv := vaulttest.Start(t)
	c := srv.Client(t)
	srv.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Sys().HealthWithContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("health of a paused server: got %v, want a deadline exceeded", err)
	}
	srv.Resume()
	if _, err := c.Sys().HealthWithContext(t.Context()); err != nil {
		t.Fatalf("health after resume: %v", err)
	}
}
