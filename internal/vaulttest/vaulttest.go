// Package vaulttest runs a real Vault dev server for tests: built from the published Go
// module by scripts/vault.sh (make test does this and sets TOKENSVC_VAULT_BIN), started
// on a free loopback port, stopped when the test ends.
package vaulttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// BinaryEnv names the variable that points at the Vault binary.
const BinaryEnv = "TOKENSVC_VAULT_BIN"

// Binary returns the Vault binary. Outside CI a missing binary skips the test with the
// command that provides it; in CI (CI set) it fails, so a misconfigured pipeline cannot
// pass by skipping.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		return p
	}
	msg := BinaryEnv + " is not set: run `make test`, or `" + BinaryEnv + "=$(scripts/vault.sh) go test ./...`"
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// Server is a running Vault dev server (in-memory storage, unsealed, root token known).
type Server struct {
	// Addr is the server's URL, http://127.0.0.1:port.
	Addr string
	// RootToken is the dev server's root token.
	RootToken string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *syncbuf.Buffer
}

// Start starts a dev server with KV v2 at secret/ (the dev default) and Transit at
// transit/, and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	s := &Server{Addr: "http://" + addr, RootToken: "root-" + hex.EncodeToString(tok[:]), out: &syncbuf.Buffer{}}

	cmd := exec.Command(bin, "server", "-dev",
		"-dev-listen-address="+addr,
		"-dev-root-token-id="+s.RootToken,
		"-dev-no-store-token",
		"-log-level=warn",
	)
	cmd.Env = []string{"HOME=" + tb.TempDir(), "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start vault: %v", err)
	}
	s.cmd = cmd
	tb.Cleanup(func() {
		s.stop()
		if tb.Failed() {
			tb.Logf("vault output:\n%s", s.out.String())
		}
	})
	if err := s.waitReady(30 * time.Second); err != nil {
		tb.Fatalf("vault did not become ready: %v\n%s", err, s.out.String())
	}
	c := s.Client(tb)
	if err := c.Sys().MountWithContext(context.Background(), "transit", &vault.MountInput{Type: "transit"}); err != nil {
		tb.Fatalf("mount transit: %v", err)
	}
	return s
}

func (s *Server) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("health: %s", resp.Status)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// Client returns a client authenticated with the root token, without retries.
func (s *Server) Client(tb testing.TB) *vault.Client {
	tb.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetToken(s.RootToken)
	return c
}

// Pause freezes the server process (SIGSTOP): connections are accepted by the kernel but
// never answered, the hardest outage for a client — it must not hang.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Output is what the server has logged so far.
func (s *Server) Output() string { return strings.TrimSpace(s.out.String()) }
