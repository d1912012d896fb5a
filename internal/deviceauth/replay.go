package deviceauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/store"
)

// ReplaySetting names the store setting that carries used jti values across a restart.
const ReplaySetting = "deviceauth.replay"

// maxSavedJTIs bounds the snapshot written at shutdown; a busier node writes none and
// starts the next time as after a crash (see Restore).
const maxSavedJTIs = 100_000

var (
	errReplayed  = errors.New("jti or nonce already used")
	errQuiescent = errors.New("assertion issued before this process could know every jti used before it started")
	errStopped   = errors.New("verifier stopped")
)

// ReplayStore records single-use values (a device's jti, a nonce) as consumed. The
// Verifier calls Consume once per accepted assertion, after every other check passed.
type ReplayStore interface {
	// Consume records id as used until expiry and reports whether it was fresh (not
	// recorded before). It returns store.ErrUnavailable (wrapped) when a shared store
	// cannot answer in time: the caller must then refuse, never accept.
	Consume(ctx context.Context, id string, expiry time.Time) (fresh bool, err error)
}

// WithReplayStore makes the verifier consume jtis and nonces in rs (a store shared by
// every replica) instead of this process's memory; Restore and Save then do nothing.
func WithReplayStore(rs ReplayStore) Option {
	return func(v *Verifier) { v.replay, v.mem = rs, nil }
}

// SettingStore is the part of the store that persists the replay memory.
type SettingStore interface {
	GetSetting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
}

// MemoryReplay is the per-process ReplayStore, the default: used values are remembered
// in memory until their assertion could no longer be accepted anyway, saved at shutdown
// and restored at start; see the README's security model for crashes and replicas.
//
// A value is remembered by its digest (the first 16 bytes of its SHA-256) with its
// expiry in Unix nanoseconds: a map with neither pointers in its keys nor in its values,
// which the collector never scans. A busy node holds hundreds of thousands of them (every
// assertion of the last few minutes); as strings and time.Time values they were most of
// what each collection had to mark (BENCHMARKS §20.2).
type MemoryReplay struct {
	mu        sync.Mutex
	now       func() time.Time
	seen      map[digest]int64 // digest of the value → used until, Unix nanoseconds
	nextSweep time.Time
	// notBefore refuses assertions issued earlier: after a crash, jti values used by
	// the previous process are unknown, and only an iat later than anything that
	// process could have accepted proves an assertion new.
	notBefore time.Time
	stopped   bool
}

var _ ReplayStore = (*MemoryReplay)(nil)

// NewMemoryReplay returns an empty MemoryReplay on clock now (time.Now when nil).
func NewMemoryReplay(now func() time.Time) *MemoryReplay {
	if now == nil {
		now = time.Now
	}
	return &MemoryReplay{now: now, seen: make(map[digest]int64)}
}

// digest is what MemoryReplay remembers of a value: 128 bits of SHA-256, so two values
// share one only by a collision nobody can find, and the same in every process (saved
// digests stay valid across a restart).
type digest [16]byte

func digestOf(id string) digest {
	h := sha256.Sum256([]byte(id))
	return digest(h[:16])
}

// Consume records id until expiry; it fails only once Save has stopped the cache.
func (c *MemoryReplay) Consume(_ context.Context, id string, expiry time.Time) (bool, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return false, errStopped
	}
	if now.After(c.nextSweep) {
		c.sweep(now)
		c.nextSweep = now.Add(time.Minute)
	}
	k := digestOf(id)
	if until, ok := c.seen[k]; ok && now.UnixNano() <= until {
		return false, nil
	}
	c.seen[k] = expiry.UnixNano()
	return true, nil
}

// issuedTooEarly reports whether something issued at iat predates the crash cut-off.
func (c *MemoryReplay) issuedTooEarly(iat time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return iat.Before(c.notBefore)
}

func (c *MemoryReplay) sweep(now time.Time) {
	n := now.UnixNano()
	for k, until := range c.seen {
		if n > until {
			delete(c.seen, k)
		}
	}
}

// replayState is the saved form. Saved (or, as versions before digests wrote it, Clean)
// is false while a process runs: finding both false at start means the previous process
// did not save its memory.
type replayState struct {
	// Clean and Used are the form of versions that remembered values as they are
	// (Used: value → until, Unix seconds). Restore still reads it, after a downgrade and
	// upgrade again; Save writes Clean false, so that such a version started on this
	// version's state refuses older assertions as after a crash instead of loading
	// digests it could never match.
	Clean bool             `json:"clean"`
	At    time.Time        `json:"at"`
	Used  map[string]int64 `json:"used,omitempty"`
	// Saved and Digests are this version's: the digests (base64) → until, Unix seconds.
	Saved   bool             `json:"saved,omitempty"`
	Digests map[string]int64 `json:"digests,omitempty"`
	// NotBefore carries a crash's cut-off through later clean restarts: the process
	// after a crash refuses assertions issued before its start, and must hand that rule
	// on, or the one after it would accept the crashed process's jtis again.
	NotBefore time.Time `json:"notBefore,omitzero"`
}

// Restore loads the jti values the previous process saved and marks the state as in use,
// so a crash is recognised at the next start. When the previous process did not save
// (it crashed, or had too many to save), assertions and nonces issued before now +
// Leeway are refused: no earlier iat can prove an assertion was not accepted before the
// crash. Devices sign a fresh assertion (or fetch a new nonce) and retry. A store
// that has never held the setting (a new install or an upgrade) starts empty.
func (v *Verifier) Restore(ctx context.Context, s SettingStore) error {
	if v.mem == nil {
		return nil // a shared replay store keeps its own state
	}
	now := v.now()
	raw, err := s.GetSetting(ctx, ReplaySetting)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("restore replay memory: %w", err)
	default:
		var st replayState
		if err := json.Unmarshal(raw, &st); err != nil || !(st.Saved || st.Clean) {
			v.mem.mu.Lock()
			v.mem.notBefore = now.Add(Leeway)
			v.mem.mu.Unlock()
			break
		}
		v.mem.mu.Lock()
		v.mem.restore(now, st)
		if st.NotBefore.After(v.mem.notBefore) {
			v.mem.notBefore = st.NotBefore
		}
		v.mem.mu.Unlock()
	}
	b, _ := json.Marshal(replayState{Clean: false, At: now.UTC()})
	if err := s.PutSetting(ctx, ReplaySetting, b); err != nil {
		return fmt.Errorf("mark replay memory in use: %w", err)
	}
	return nil
}

// restore loads the values st holds that are still in their window, in either form.
// c.mu is held.
func (c *MemoryReplay) restore(now time.Time, st replayState) {
	keep := func(k digest, until int64) {
		if t := time.Unix(until, 0); !now.After(t) {
			c.seen[k] = t.UnixNano()
		}
	}
	for s, until := range st.Digests {
		var k digest
		if len(s) != base64.RawStdEncoding.EncodedLen(len(k)) {
			continue
		}
		if n, err := base64.RawStdEncoding.Decode(k[:], []byte(s)); err == nil && n == len(k) {
			keep(k, until)
		}
	}
	for id, until := range st.Used {
		keep(digestOf(id), until)
	}
}

// Save stops accepting assertions and writes the jti values (and nonces) still inside
// their window, for Restore at the next start. Call it after the server has drained.
// With a shared replay store (WithReplayStore) it does nothing.
func (v *Verifier) Save(ctx context.Context, s SettingStore) error {
	c := v.mem
	if c == nil {
		return nil
	}
	now := v.now()
	c.mu.Lock()
	c.stopped = true
	c.sweep(now)
	st := replayState{Saved: len(c.seen) <= maxSavedJTIs, At: now.UTC()}
	// A crash cut-off matters only while assertions from before it could still be
	// inside their lifetime; after that it is dropped.
	if !c.notBefore.IsZero() && now.Before(c.notBefore.Add(MaxLifetime+2*Leeway)) {
		st.NotBefore = c.notBefore.UTC()
	}
	if st.Saved {
		st.Digests = make(map[string]int64, len(c.seen))
		for k, until := range c.seen {
			// Round up, so a saved entry never ends earlier than the one in memory.
			st.Digests[base64.RawStdEncoding.EncodeToString(k[:])] = time.Unix(0, until).Add(time.Second - 1).Unix()
		}
	}
	c.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save replay memory: %w", err)
	}
	if err := s.PutSetting(ctx, ReplaySetting, b); err != nil {
		return fmt.Errorf("save replay memory: %w", err)
	}
	return nil
}
