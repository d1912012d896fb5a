package redisreplay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/redistest"
	"github.com/tokensvc/tokensvc/internal/replay/redisreplay"
	"github.com/tokensvc/tokensvc/internal/store"
)

var _ deviceauth.ReplayStore = (*redisreplay.Store)(nil)

const timeout = 250 * time.Millisecond

func mustStore(tb testing.TB, srv *redistest.Server, password string) *redisreplay.Store {
	tb.Helper()
	s, err := redisreplay.New(redisreplay.Config{URL: srv.URL(), Password: password, Timeout: timeout})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// TestConsume: a value is fresh once, on any client of the same server, and the server
// keeps it exactly as long as it could still be accepted.
func TestConsume(t *testing.T) {
	srv := redistest.Start(t)
	a, b := mustStore(t, srv, srv.Password), mustStore(t, srv, srv.Password)
	ctx := t.Context()
	expiry := time.Now().Add(90 * time.Second)
	tests := []struct {
		name string
		s    *redisreplay.Store
		id   string
		want bool
	}{
		{"first use", a, "d1\x00jti-1", true},
		{"again, same client", a, "d1\x00jti-1", false},
		{"again, other client (another replica)", b, "d1\x00jti-1", false},
		{"same jti, other device", b, "d2\x00jti-1", true},
		{"a nonce", b, "\x00nonce\x00abc", true},
	}
	for _, tt := range tests {
		got, err := tt.s.Consume(ctx, tt.id, expiry)
		if err != nil || got != tt.want {
			t.Errorf("%s: got fresh=%v err=%v, want fresh=%v", tt.name, got, err, tt.want)
		}
	}
	ttl, err := srv.Client(t).PTTL(ctx, redisreplay.KeyPrefix+"d1\x00jti-1").Result()
	if err != nil || ttl <= 85*time.Second || ttl > 90*time.Second {
		t.Errorf("key expiry: got %v (err %v), want the remaining lifetime, about 90 s", ttl, err)
	}
}

// TestOneRoundTripPerValue counts the server's commands: one SET per consumed value,
// nothing else, whether the value is fresh or replayed.
func TestOneRoundTripPerValue(t *testing.T) {
	srv := redistest.Start(t)
	s := mustStore(t, srv, srv.Password)
	ctx := t.Context()
	if _, err := s.Consume(ctx, "warm-up", time.Now().Add(time.Minute)); err != nil { // dials (HELLO) once
		t.Fatal(err)
	}
	srv.ResetStats(t)
	const n = 200
	for i := range n {
		if _, err := s.Consume(ctx, "id-"+string(rune('a'+i%26))+"-"+time.Duration(i).String(), time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	calls := srv.Calls(t)
	delete(calls, "config|resetstat") // the reset itself
	delete(calls, "info")
	if calls["set"] != n || len(calls) != 1 {
		t.Errorf("commands for %d values: got %v, want exactly {set: %d}", n, calls, n)
	}
}

// TestFailClosed: a wrong password, a dead server and a server back from the dead. Every
// failure is store.ErrUnavailable within the call timeout and quotes no password; after
// the server returns, values consumed before the outage are still used (the append-only
// file kept them) and new ones are fresh.
func TestFailClosed(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	wrong := mustStore(t, srv, "not-the-password")
	if _, err := wrong.Consume(ctx, "x", time.Now().Add(time.Minute)); !errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("wrong password: got %v, want store.ErrUnavailable without the password", err)
	}

	s := mustStore(t, srv, srv.Password)
	if fresh, err := s.Consume(ctx, "before", time.Now().Add(time.Minute)); !fresh || err != nil {
		t.Fatalf("before the outage: got %v %v", fresh, err)
	}
	srv.Kill()
	for range 3 { // the pool's first failures dial, the later ones fail fast
		_, err := s.Consume(ctx, "during", time.Now().Add(time.Minute))
		if !errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), srv.Password) {
			t.Fatalf("server down: got %v, want store.ErrUnavailable without the password", err)
		}
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ping with the server down: got %v, want store.ErrUnavailable", err)
	}

	srv.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		fresh, err := s.Consume(ctx, "before", time.Now().Add(time.Minute))
		if err == nil {
			if fresh {
				t.Errorf("a value consumed before the outage: fresh after the restart")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered 30 s after the server's return: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fresh, err := s.Consume(ctx, "after", time.Now().Add(time.Minute)); !fresh || err != nil {
		t.Errorf("a new value after the outage: got %v %v, want fresh", fresh, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     redisreplay.Config
		wantErr string
	}{
		{"plain", redisreplay.Config{URL: "redis://127.0.0.1:6379", Timeout: timeout}, ""},
		{"tls with user and db", redisreplay.Config{URL: "rediss://tokensvc@redis.example:6380/2", CAFile: "/ca.pem", Timeout: timeout}, ""},
		{"password in the URL", redisreplay.Config{URL: "redis://u:hunter2hunter2@h:6379", Timeout: timeout}, "carries a password"},
		{"other scheme", redisreplay.Config{URL: "http://h:6379", Timeout: timeout}, "want redis://"},
		{"no host", redisreplay.Config{URL: "redis://", Timeout: timeout}, "no host"},
		{"query", redisreplay.Config{URL: "redis://h?dial_timeout=1s", Timeout: timeout}, "no query"},
		{"path not a number", redisreplay.Config{URL: "redis://h/x", Timeout: timeout}, "database number"},
		{"CA file without TLS", redisreplay.Config{URL: "redis://h", CAFile: "/ca.pem", Timeout: timeout}, "needs a rediss"},
		{"no timeout", redisreplay.Config{URL: "redis://h"}, "timeout"},
		{"garbage", redisreplay.Config{URL: "redis://u:hunter2hunter2@[::1", Timeout: timeout}, "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error quotes the password: %v", err)
			}
		})
	}
}

// BenchmarkConsume is one SET NX PX round trip on loopback.
func BenchmarkConsume(b *testing.B) {
	srv := redistest.Start(b)
	s := mustStore(b, srv, srv.Password)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := s.Consume(ctx, "bench-"+time.Duration(i).String(), time.Now().Add(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTLS: rediss:// with the server's CA file works; without it (system roots), or
// over plain redis:// to a TLS-only server, every call fails closed.
func TestTLS(t *testing.T) {
	srv := redistest.StartTLS(t)
	ctx := t.Context()
	tests := []struct {
		name    string
		cfg     redisreplay.Config
		wantErr bool
	}{
		{"rediss with the CA file", redisreplay.Config{URL: srv.URL(), CAFile: srv.CAFile()}, false},
		{"rediss with the system roots", redisreplay.Config{URL: srv.URL()}, true},
		{"plain redis to a TLS server", redisreplay.Config{URL: "redis://" + srv.Addr}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Password, tt.cfg.Timeout = srv.Password, timeout
			s, err := redisreplay.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			fresh, err := s.Consume(ctx, "tls-"+tt.name, time.Now().Add(time.Minute))
			if tt.wantErr {
				if !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("got fresh=%v err=%v, want store.ErrUnavailable", fresh, err)
				}
				return
			}
			if err != nil || !fresh {
				t.Errorf("got fresh=%v err=%v, want a fresh value", fresh, err)
			}
		})
	}
	if _, err := redisreplay.New(redisreplay.Config{URL: srv.URL(), CAFile: "/nonexistent/ca.pem", Timeout: timeout}); err == nil {
		t.Error("a missing CA file: got no error at New")
	}
}
