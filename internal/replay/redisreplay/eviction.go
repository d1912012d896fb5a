package redisreplay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokensvc/tokensvc/internal/store"
)

// A server with a memory limit evicts keys when it reaches it, under every
// maxmemory-policy but noeviction: volatile-* pick among keys with an expiry, which is
// every key this package writes. An evicted value is fresh again, so a captured
// assertion could be replayed, and nothing says so: the store fails open. Under
// noeviction a full server refuses the SET instead, which fails closed. So Consume
// and Ping read the policy (INFO memory, allowed where CONFIG is not, as on the managed
// services, whose default is volatile-lru with a limit) once per evictionCheckEvery and
// refuse while it may evict.

// ErrEvicting is returned (wrapped, with store.ErrUnavailable) while the server may
// evict keys before they expire.
var ErrEvicting = errors.New("the replay store's server may evict keys before they expire (maxmemory is set and maxmemory-policy is not noeviction), forgetting consumed values so they could be replayed; set maxmemory-policy noeviction")

// evictionCheckEvery is how long a verdict on the server's policy stands.
const evictionCheckEvery = time.Minute

// evictionCheck holds the last verdict on the server's memory policy.
type evictionCheck struct {
	// goodUntil (Unix ns) lets Consume pass without the lock while a verdict that the
	// server does not evict stands.
	goodUntil atomic.Int64
	mu        sync.Mutex
	checked   time.Time // zero: never
	err       error     // ErrEvicting or nil
}

// evicting returns ErrEvicting (wrapped) while the server may evict keys, reading its
// policy again once the last verdict is evictionCheckEvery old. A server that does
// not answer is store.ErrUnavailable; one that refuses INFO (an ACL without it, a
// renamed command) cannot be checked and is trusted (the README asks for noeviction).
func (s *Store) evicting(ctx context.Context) error {
	now := s.now()
	if now.UnixNano() < s.ev.goodUntil.Load() {
		return nil
	}
	s.ev.mu.Lock()
	defer s.ev.mu.Unlock()
	if !s.ev.checked.IsZero() && now.Sub(s.ev.checked) < evictionCheckEvery && !now.Before(s.ev.checked) {
		return s.ev.err
	}
	info, err := s.c.Info(ctx, "memory").Result()
	var refused redis.Error
	switch {
	case errors.As(err, &refused):
		// The server answered but would not say (an ACL without INFO, a renamed
		// command): it cannot be judged. A refusal that also stops SET (a wrong
		// password) fails Consume there.
		s.ev.err = nil
	case err != nil:
		return fmt.Errorf("replay store memory policy: %w: %v", store.ErrUnavailable, err)
	default:
		s.ev.err = evictionVerdict(info)
	}
	s.ev.checked = now
	if s.ev.err == nil {
		s.ev.goodUntil.Store(now.Add(evictionCheckEvery).UnixNano())
	} else {
		s.ev.goodUntil.Store(0)
	}
	return s.ev.err
}

// evictionVerdict reads INFO memory's maxmemory and maxmemory_policy.
func evictionVerdict(info string) error {
	limit, policy := "", ""
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		switch k {
		case "maxmemory":
			limit = v
		case "maxmemory_policy":
			policy = v
		}
	}
	if limit == "0" || policy == "noeviction" {
		return nil
	}
	if limit == "" && policy == "" {
		return nil // a server that reports neither cannot be judged
	}
	return fmt.Errorf("%w: %w (maxmemory %s, maxmemory-policy %s)", store.ErrUnavailable, ErrEvicting, limit, policy)
}
