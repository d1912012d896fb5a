package redisreplay_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokensvc/tokensvc/internal/redistest"
	"github.com/tokensvc/tokensvc/internal/replay/redisreplay"
	"github.com/tokensvc/tokensvc/internal/store"
)

// TestConsumeRefusesAnEvictingServer: a server with a memory limit and a policy that
// evicts keys under it (volatile-lru is the default of the managed services) forgets a
// consumed value as soon as memory runs short, and the value is then fresh again: a
// captured assertion replays. Consume refuses such a server (fail closed, as for an
// unreachable one) and works with noeviction or without a limit.
func TestConsumeRefusesAnEvictingServer(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := t.Context()
	tests := []struct {
		maxmemory, policy string
		refuse            bool
	}{
		{"0", "noeviction", false},
		{"0", "volatile-lru", false}, // no limit: nothing is ever evicted
		{"64mb", "noeviction", false},
		{"64mb", "volatile-lru", true},
		{"64mb", "volatile-ttl", true},
		{"64mb", "allkeys-lru", true},
	}
	for i, tc := range tests {
		t.Run(tc.maxmemory+"/"+tc.policy, func(t *testing.T) {
			if err := admin.ConfigSet(ctx, "maxmemory", tc.maxmemory).Err(); err != nil {
				t.Fatal(err)
			}
			if err := admin.ConfigSet(ctx, "maxmemory-policy", tc.policy).Err(); err != nil {
				t.Fatal(err)
			}
			s := mustStore(t, srv, srv.Password) // a process starting against this server
			fresh, err := s.Consume(ctx, "id-"+string(rune('a'+i)), time.Now().Add(time.Minute))
			if !tc.refuse {
				if err != nil || !fresh {
					t.Errorf("Consume: got fresh=%v err=%v, want fresh", fresh, err)
				}
				return
			}
			if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, redisreplay.ErrEvicting) || !strings.Contains(err.Error(), "noeviction") {
				t.Errorf("Consume: got fresh=%v err=%v, want store.ErrUnavailable and ErrEvicting naming the fix", fresh, err)
			}
			if err := s.Ping(ctx); !errors.Is(err, redisreplay.ErrEvicting) {
				t.Errorf("Ping: got %v, want ErrEvicting", err)
			}
		})
	}
	// The verdict is read again later: a server fixed while the process runs serves.
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s, err := redisreplay.New(redisreplay.Config{URL: srv.URL(), Password: srv.Password, Timeout: timeout},
		redisreplay.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Consume(ctx, "later", now.Add(time.Minute)); !errors.Is(err, redisreplay.ErrEvicting) {
		t.Fatalf("evicting server: got %v, want ErrEvicting", err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if fresh, err := s.Consume(ctx, "later", now.Add(time.Minute)); err != nil || !fresh {
		t.Errorf("after the server was fixed: got fresh=%v err=%v, want fresh", fresh, err)
	}
}

// TestConsumeTrustsAServerThatWillNotSay: a server whose ACL denies INFO cannot be
// judged; Consume works on it (the README asks for noeviction), so a tight ACL does
// not take the service down.
func TestConsumeTrustsAServerThatWillNotSay(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := t.Context()
	for _, kv := range [][2]string{{"maxmemory", "64mb"}, {"maxmemory-policy", "allkeys-lru"}} {
		if err := admin.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "noinfo", "on", ">noinfo-password", "~*", "+@all", "-info").Err(); err != nil {
		t.Fatal(err)
	}
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "noinfo", Password: "noinfo-password"})
	defer probe.Close()
	if err := probe.Info(ctx, "memory").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("INFO as the user without it: got %v, want NOPERM", err)
	}
	s, err := redisreplay.New(redisreplay.Config{URL: strings.Replace(srv.URL(), "://", "://noinfo@", 1), Password: "noinfo-password", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fresh, err := s.Consume(ctx, "x", time.Now().Add(time.Minute)); err != nil || !fresh {
		t.Errorf("Consume as a user without INFO: got fresh=%v err=%v, want fresh", fresh, err)
	}
}
