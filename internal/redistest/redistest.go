// Package redistest runs a real redis-server (Debian's redis-server package; make test
// installs it with scripts/redis.sh and sets TOKENSVC_REDIS_BIN) for tests: started on
// a free loopback port with a password and an append-only file fsynced on every write,
// so a test can Kill it with SIGKILL and Restart it on the same address with every key
// it acknowledged still there. Stopped when the test ends.
package redistest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokensvc/tokensvc/internal/syncbuf"
	"github.com/tokensvc/tokensvc/internal/testbin"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// BinaryEnv names the variable that points at redis-server; unset, PATH is searched.
const BinaryEnv = "TOKENSVC_REDIS_BIN"

const readyTimeout = 15 * time.Second

// Binary returns the redis-server binary. Outside CI a missing binary skips the test
// with the command that provides it; in CI (CI=true) it fails, so a pipeline cannot
// pass by skipping.
func Binary(tb testing.TB) string {
	tb.Helper()
	return testbin.Find(tb, BinaryEnv, "redis-server",
		"redis-server not found: run `make test`, or `apt-get install redis-server` (or set "+BinaryEnv+")")
}

// Server is a running redis-server.
type Server struct {
	// Addr is host:port on loopback.
	Addr string
	// Password is the server's requirepass.
	Password string
	// CA issued the server's certificate when it speaks TLS (StartTLS); nil otherwise.
	CA *testca.Cert

	bin, dir string
	out      *syncbuf.Buffer

	// admin is the helper's own client, one connection reused, so its handshakes do not
	// show in the command statistics a test reads.
	admin *redis.Client

	proc testbin.Process
}

// Start starts a server and stops it when tb ends.
func Start(tb testing.TB) *Server { tb.Helper(); return start(tb, false) }

// StartTLS starts a server that speaks only TLS, with a certificate for 127.0.0.1 from
// a throwaway CA (Server.CA), and stops it when tb ends. URL is then rediss://.
func StartTLS(tb testing.TB) *Server { tb.Helper(); return start(tb, true) }

func start(tb testing.TB, useTLS bool) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	s := &Server{Addr: addr, Password: hex.EncodeToString(pw[:]), bin: Binary(tb), dir: tb.TempDir(), out: &syncbuf.Buffer{}}
	opts := &redis.Options{Addr: addr, Password: s.Password, MaxRetries: -1, DisableIdentity: true, PoolSize: 1}
	if useTLS {
		s.CA = testca.NewCA(tb, "redistest CA")
		leaf := s.CA.Issue(tb, testca.Spec{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}})
		s.CA.WriteCert(tb, filepath.Join(s.dir, "ca.pem"))
		leaf.WriteCert(tb, filepath.Join(s.dir, "server.pem"))
		leaf.WriteKey(tb, filepath.Join(s.dir, "server.key"))
		opts.TLSConfig = &tls.Config{RootCAs: testca.Pool(s.CA), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	s.admin = redis.NewClient(opts)
	tb.Cleanup(func() {
		s.admin.Close()
		s.Kill()
		if tb.Failed() {
			tb.Logf("redis-server output:\n%s", s.out.String())
		}
	})
	s.Restart(tb)
	return s
}

// URL is the server's redis:// (rediss:// with TLS) URL, without the password.
func (s *Server) URL() string {
	if s.CA != nil {
		return "rediss://" + s.Addr
	}
	return "redis://" + s.Addr
}

// CAFile is a PEM file of Server.CA; empty without TLS.
func (s *Server) CAFile() string {
	if s.CA == nil {
		return ""
	}
	return filepath.Join(s.dir, "ca.pem")
}

// Restart starts the (killed) server again on the same address and data directory and
// returns once it answers. It must be called from the test's goroutine.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	host, port, _ := net.SplitHostPort(s.Addr)
	// The configuration goes in a file, so the password never shows in ps.
	listen := []string{"port " + port}
	if s.CA != nil {
		listen = []string{
			"port 0",
			"tls-port " + port,
			"tls-cert-file " + filepath.Join(s.dir, "server.pem"),
			"tls-key-file " + filepath.Join(s.dir, "server.key"),
			"tls-ca-cert-file " + filepath.Join(s.dir, "ca.pem"),
			"tls-auth-clients no",
		}
	}
	conf := strings.Join(append(append([]string{"bind " + host}, listen...),
		"dir "+s.dir,
		"requirepass "+s.Password,
		"appendonly yes",
		"appendfsync always",
		`save ""`,
		"protected-mode no",
		"daemonize no",
		"loglevel warning",
		"",
	), "\n")
	path := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(s.bin, path)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	exited := s.proc.Start(tb, cmd)

	c := s.admin
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-exited:
			tb.Fatalf("redis-server exited at start:\n%s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redis-server did not answer within %v: %v\n%s", readyTimeout, err, s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL and waits until it has exited; its port refuses
// connections from then on. Killing a stopped server does nothing.
func (s *Server) Kill() { s.proc.Kill() }

// Client is a client of the server, closed when tb ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: s.Password, MaxRetries: -1, DisableIdentity: true})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Calls returns how many times the server has run each command (lower case, e.g.
// "set") since it started or since ResetStats, from INFO commandstats.
func (s *Server) Calls(tb testing.TB) map[string]int {
	tb.Helper()
	info, err := s.admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatalf("INFO commandstats: %v", err)
	}
	calls := map[string]int{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		n, err := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		if err != nil {
			tb.Fatalf("INFO commandstats: %q: %v", line, err)
		}
		calls[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return calls
}

// ResetStats zeroes the server's command statistics (CONFIG RESETSTAT).
func (s *Server) ResetStats(tb testing.TB) {
	tb.Helper()
	if err := s.admin.ConfigResetStat(context.Background()).Err(); err != nil {
		tb.Fatalf("CONFIG RESETSTAT: %v", err)
	}
}
