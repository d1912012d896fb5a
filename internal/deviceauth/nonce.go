package deviceauth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// Nonce limits.
const (
	// NonceTTL is how long a nonce can be used after it was issued.
	NonceTTL = 60 * time.Second
	// DefaultMaxNonces bounds the nonces outstanding at once; the oldest is evicted
	// when another is issued.
	DefaultMaxNonces = 100_000
)

var (
	errNonceUnknown = errors.New("nonce unknown, already used or evicted")
	errNonceExpired = errors.New("nonce expired")
	errNonceRevoked = errors.New("nonce issued before the device was revoked")
)

// nonceStore holds the nonces this process issued, in memory. Nonces expire in issue
// order (one TTL for all), so one queue in issue order serves both expiry and eviction.
type nonceStore struct {
	mu     sync.Mutex
	limit  int
	issued map[string]time.Time
	queue  []string // issue order; queue[head] is the oldest still tracked
	head   int
}

func newNonceStore(limit int) *nonceStore {
	return &nonceStore{limit: max(limit, 1), issued: make(map[string]time.Time)}
}

// issue returns a fresh random 128-bit nonce, evicting expired ones and, at the limit,
// the oldest.
func (s *nonceStore) issue(now time.Time) (string, time.Time) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	nonce := base64.RawURLEncoding.EncodeToString(b[:])

	s.mu.Lock()
	defer s.mu.Unlock()
	for s.head < len(s.queue) {
		old := s.queue[s.head]
		t, live := s.issued[old]
		if len(s.queue)-s.head < s.limit && live && now.Sub(t) <= NonceTTL {
			break
		}
		delete(s.issued, old)
		s.queue[s.head] = ""
		s.head++
	}
	if s.head > len(s.queue)/2 {
		// Reuse the front of the backing array once half of it is dead.
		s.queue = append(s.queue[:0], s.queue[s.head:]...)
		s.head = 0
	}
	s.queue = append(s.queue, nonce)
	s.issued[nonce] = now
	return nonce, now.Add(NonceTTL)
}

// take consumes nonce if it is known, unexpired at now and not issued before
// notBefore. Used nonces stay in the ring until they age out; only the map forgets them.
func (s *nonceStore) take(nonce string, notBefore, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.issued[nonce]
	switch {
	case !ok:
		return errNonceUnknown
	case now.Sub(t) > NonceTTL:
		delete(s.issued, nonce)
		return errNonceExpired
	case t.Before(notBefore):
		return errNonceRevoked
	}
	delete(s.issued, nonce)
	return nil
}
