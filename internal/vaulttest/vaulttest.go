// Package vaulttest runs a real Vault server for tests: built from the published Go
// module by scripts/vault.sh (make test does this and sets TOKENSVC_VAULT_BIN), started
// on a free loopback port, stopped when the test ends.
//
// Start runs a dev server: in-memory storage, unsealed, fast to start, and gone with
// its process. StartPersistent runs a server on file storage in a temporary directory,
// initialised and unsealed through the API, so a test can Kill it and Restart it on the
// same address with everything it held (records, Transit keys, tokens and their
// leases) still there — the outage a dev server cannot stage. A dev server also has
// sys/raw on, so DropVersionData can stage what an interrupted KV v2 delete leaves.
package vaulttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/syncbuf"
	"github.com/tokensvc/tokensvc/internal/testbin"
)

// BinaryEnv names the variable that points at the Vault binary.
const BinaryEnv = "TOKENSVC_VAULT_BIN"

// readyTimeout bounds how long a starting server may take to answer and unseal.
const readyTimeout = 30 * time.Second

// Binary returns the Vault binary. Outside CI a missing binary skips the test with the
// command that provides it; in CI (CI set) it fails, so a misconfigured pipeline cannot
// pass by skipping.
func Binary(tb testing.TB) string {
	tb.Helper()
	return testbin.Find(tb, BinaryEnv, "",
		BinaryEnv+" is not set: run `make test`, or `"+BinaryEnv+"=$(scripts/vault.sh) go test ./...`")
}

// Server is a running Vault server, unsealed, with its root token known: a dev server
// (Start) or a persistent one (StartPersistent).
type Server struct {
	// Addr is the server's URL, http://127.0.0.1:port.
	Addr string
	// RootToken is the server's root token.
	RootToken string

	bin  string
	args []string // the command line, reused by Restart
	env  []string
	out  *syncbuf.Buffer
	// unsealKey is the persistent server's only unseal key share; empty for a dev
	// server, which cannot be restarted. Never logged.
	unsealKey string

	proc testbin.Process
}

// Start starts a dev server with KV v2 at secret/ (the dev default) and Transit at
// transit/, and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, addr := newServer(tb)
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	s.RootToken = "root-" + hex.EncodeToString(tok[:])
	// sys/raw lets DropVersionData stage what an interrupted delete leaves.
	config := filepath.Join(tb.TempDir(), "vault.hcl")
	if err := os.WriteFile(config, []byte("raw_storage_endpoint = true\n"), 0o600); err != nil {
		tb.Fatalf("write vault config: %v", err)
	}
	s.args = []string{"server", "-dev", "-config=" + config,
		"-dev-listen-address=" + addr,
		"-dev-root-token-id=" + s.RootToken,
		"-dev-no-store-token",
		"-log-level=warn",
	}
	s.launch(tb)
	if err := s.waitHealth(readyTimeout, active); err != nil {
		tb.Fatalf("vault did not become ready: %v\n%s", err, s.Output())
	}
	s.mount(tb, "transit", &vault.MountInput{Type: "transit"})
	s.warmTransit(tb)
	return s
}

// StartPersistent starts a server on file storage in a temporary directory with a TCP
// listener on a free loopback port; initialises it (one key share, threshold one),
// unseals it, and mounts KV v2 at secret/ and Transit at transit/ as a dev server has
// them. Unlike a dev server it can be killed and restarted with its data (Kill,
// Restart). It is stopped when tb ends.
func StartPersistent(tb testing.TB) *Server {
	tb.Helper()
	s, addr := newServer(tb)
	// Unsealed, the server also listens for cluster traffic, by default on the port
	// after addr's, which nothing reserved for it; give it a free port of its own.
	clusterAddr := freeAddr(tb)
	dir := tb.TempDir()
	config := fmt.Sprintf(`storage "file" {
  path = %q
}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
disable_mlock = true
api_addr      = %q
cluster_addr  = %q
`, filepath.Join(dir, "data"), addr, clusterAddr, s.Addr, "https://"+clusterAddr)
	path := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		tb.Fatalf("write vault config: %v", err)
	}
	s.args = []string{"server", "-config=" + path, "-log-level=warn"}
	s.launch(tb)
	// Uninitialised, the health endpoint answers 501; any answer means it listens.
	if err := s.waitHealth(readyTimeout, answering); err != nil {
		tb.Fatalf("vault did not start: %v\n%s", err, s.Output())
	}
	c := s.client(tb, "", nil)
	init, err := c.Sys().InitWithContext(context.Background(), &vault.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		tb.Fatalf("initialise vault: %v", err)
	}
	if len(init.Keys) != 1 || init.RootToken == "" {
		tb.Fatalf("initialise vault: got %d key shares and a root token %t, want 1 and true", len(init.Keys), init.RootToken != "")
	}
	s.unsealKey, s.RootToken = init.Keys[0], init.RootToken
	s.unseal(tb)
	s.mount(tb, "secret", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	s.mount(tb, "transit", &vault.MountInput{Type: "transit"})
	s.warmTransit(tb)
	s.waitKVAt(tb, "secret")
	return s
}

// newServer picks a free loopback port and registers the cleanup that stops whatever
// process the Server runs when tb ends.
func newServer(tb testing.TB) (*Server, string) {
	tb.Helper()
	addr := freeAddr(tb)
	s := &Server{
		Addr: "http://" + addr,
		bin:  Binary(tb),
		env:  []string{"HOME=" + tb.TempDir(), "PATH=" + os.Getenv("PATH")},
		out:  &syncbuf.Buffer{},
	}
	tb.Cleanup(func() {
		s.Kill()
		if tb.Failed() {
			tb.Logf("vault output:\n%s", s.Output())
		}
	})
	return s, addr
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// launch starts the server process with s.args.
func (s *Server) launch(tb testing.TB) {
	tb.Helper()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = s.out, s.out
	s.proc.Start(tb, cmd)
}

// active accepts only an initialised, unsealed, active server; answering accepts any
// answer from the health endpoint (501 uninitialised, 503 sealed included).
func active(status int) bool    { return status == http.StatusOK }
func answering(status int) bool { return status > 0 }

// healthClient is used while waiting: a paused or half-started server must not hang a
// poll, and its connections are not kept for later.
var healthClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (s *Server) waitHealth(d time.Duration, ok func(status int) bool) error {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		resp, err := healthClient.Get(s.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return nil
			}
			last = fmt.Errorf("health: %s", resp.Status)
		} else {
			last = err
		}
		if !s.proc.Running() {
			return fmt.Errorf("vault exited (last health check: %w)", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// unseal submits the persistent server's key share and waits until it is active.
func (s *Server) unseal(tb testing.TB) {
	tb.Helper()
	st, err := s.client(tb, "", nil).Sys().UnsealWithContext(context.Background(), s.unsealKey)
	if err != nil {
		tb.Fatalf("unseal vault: %v", err)
	}
	if st.Sealed {
		tb.Fatalf("unseal vault: still sealed after the key share (%d of %d)", st.Progress, st.T)
	}
	if err := s.waitHealth(readyTimeout, active); err != nil {
		tb.Fatalf("vault did not become active after unsealing: %v\n%s", err, s.Output())
	}
}

func (s *Server) mount(tb testing.TB, path string, in *vault.MountInput) {
	tb.Helper()
	if err := s.Client(tb).Sys().MountWithContext(context.Background(), path, in); err != nil {
		tb.Fatalf("mount %s at %s/: %v", in.Type, path, err)
	}
}

// warmTransit has Transit make its RSA-4096 wrapping key now: Transit makes it on the
// first read, which on a loaded machine can outlast the 5 s deadline of the store's
// first key import and fail a test that is not about that.
func (s *Server) warmTransit(tb testing.TB) {
	tb.Helper()
	if _, err := s.Client(tb).Logical().ReadWithContext(context.Background(), "transit/wrapping_key"); err != nil {
		tb.Fatalf("read transit/wrapping_key: %v", err)
	}
}

// waitKVAt waits until the KV v2 mount at mount answers: a KV v2 backend refuses
// requests while it sets itself up after being mounted.
func (s *Server) waitKVAt(tb testing.TB, mount string) {
	tb.Helper()
	c := s.Client(tb)
	deadline := time.Now().Add(readyTimeout)
	for {
		_, err := c.Logical().ReadWithContext(context.Background(), mount+"/config")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("KV v2 at %s/ did not become ready: %v", mount, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client returns a client authenticated with the root token, without retries.
func (s *Server) Client(tb testing.TB) *vault.Client {
	tb.Helper()
	return s.client(tb, s.RootToken, nil)
}

// ClientThrough is Client with its requests passing through the transport wrap makes
// of the client's own, for tests that count, hold or fail Vault calls.
func (s *Server) ClientThrough(tb testing.TB, wrap func(http.RoundTripper) http.RoundTripper) *vault.Client {
	tb.Helper()
	return s.client(tb, s.RootToken, wrap)
}

func (s *Server) client(tb testing.TB, token string, wrap func(http.RoundTripper) http.RoundTripper) *vault.Client {
	tb.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	// As vaultauth.NewClient: no vault/api timeout context, which raw writes cancel
	// before their body is read (closing the connection each time).
	cfg.Timeout = 0
	if wrap != nil {
		cfg.HttpClient.Transport = wrap(cfg.HttpClient.Transport)
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c.ClearToken() // never one from the environment
	if token != "" {
		c.SetToken(token)
	}
	return c
}

// Pause freezes the server process (SIGSTOP): connections are accepted by the kernel but
// never answered, the hardest outage for a client — it must not hang. It returns once
// every thread of the process has stopped (where /proc shows it), so a request sent
// after Pause cannot be answered by a thread the signal has not reached yet.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP, true) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, stopped bool) {
	pid, ok := s.proc.Signal(sig)
	if !ok {
		return
	}
	// kill(2) returns before the signal has reached every thread.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		all, ok := allThreadsStopped(pid)
		if !ok || all == stopped {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// allThreadsStopped reports whether every thread of pid is stopped; ok is false where
// /proc cannot tell (not Linux, or the process is gone).
func allThreadsStopped(pid int) (all, ok bool) {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if len(stats) == 0 {
		return false, false
	}
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			return false, false
		}
		// "tid (comm) state ...": comm may hold spaces and parentheses.
		rest := b[strings.LastIndexByte(string(b), ')')+1:]
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return false, false
		}
		if f[0] != "T" && f[0] != "t" {
			return false, true
		}
	}
	return true, true
}

// Kill ends the server process with SIGKILL (paused or not) and waits until it has
// exited: its port refuses connections from then on. A dev server's data dies with it;
// a persistent server's stays on disk for Restart. Killing a stopped server does nothing.
func (s *Server) Kill() { s.proc.Kill() }

// ErrNotPersistent is why Restart refuses a dev server.
var ErrNotPersistent = errors.New("vaulttest: only a server from StartPersistent can be restarted")

// Restart starts a killed persistent server again on the same address and storage,
// unseals it with the key share kept from initialisation, and returns once it is active
// and its KV mount answers. Like tb.Fatal, which it calls on failure, it must be called
// from the test's goroutine.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.unsealKey == "" {
		tb.Fatal(ErrNotPersistent)
	}
	s.launch(tb)
	// Sealed, the health endpoint answers 503.
	if err := s.waitHealth(readyTimeout, answering); err != nil {
		tb.Fatalf("vault did not restart: %v\n%s", err, s.Output())
	}
	s.unseal(tb)
	s.waitKVAt(tb, "secret")
}

// Output is what the server has logged so far, across restarts, without the unseal key
// and root token a dev server prints at start.
func (s *Server) Output() string {
	lines := strings.Split(strings.TrimSpace(s.out.String()), "\n")
	for i, l := range lines {
		for _, secret := range []string{"Unseal Key:", "Root Token:"} {
			if strings.HasPrefix(strings.TrimSpace(l), secret) {
				lines[i] = secret + " (redacted)"
			}
		}
	}
	return strings.Join(lines, "\n")
}
