package deviceauth

import (
	"context"
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
	errReplayed  = errors.New("jti replayed")
	errQuiescent = errors.New("assertion issued before this process could know every jti used before it started")
	errStopped   = errors.New("verifier stopped")
)

// SettingStore is the part of the store that persists the replay memory.
type SettingStore interface {
	GetSetting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
}

// replayCache remembers used jti values until their assertion could no longer be
// accepted anyway. It lives in memory, saved at shutdown and restored at start; see the
// README's security model for crashes and replicas.
type replayCache struct {
	mu        sync.Mutex
	seen      map[string]time.Time
	nextSweep time.Time
	// notBefore refuses assertions issued earlier: after a crash, jti values used by
	// the previous process are unknown, and only an iat later than anything that
	// process could have accepted proves an assertion new.
	notBefore time.Time
	stopped   bool
}

func newReplayCache() *replayCache {
	return &replayCache{seen: make(map[string]time.Time)}
}

// use records key until 'until' and reports errReplayed if it was used.
func (c *replayCache) use(key string, iat, until, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errStopped
	}
	if iat.Before(c.notBefore) {
		return errQuiescent
	}
	if now.After(c.nextSweep) {
		c.sweep(now)
		c.nextSweep = now.Add(time.Minute)
	}
	if t, ok := c.seen[key]; ok && !now.After(t) {
		return errReplayed
	}
	c.seen[key] = until
	return nil
}

func (c *replayCache) sweep(now time.Time) {
	for k, t := range c.seen {
		if now.After(t) {
			delete(c.seen, k)
		}
	}
}

// replayState is the saved form. Clean is false while a process runs: finding it false
// at start means the previous process did not save its memory.
type replayState struct {
	Clean bool             `json:"clean"`
	At    time.Time        `json:"at"`
	Used  map[string]int64 `json:"used,omitempty"` // key → until, Unix seconds
	// NotBefore carries a crash's cut-off through later clean restarts: the process
	// after a crash refuses assertions issued before its start, and must hand that rule
	// on, or the one after it would accept the crashed process's jtis again.
	NotBefore time.Time `json:"notBefore,omitzero"`
}

// Restore loads the jti values the previous process saved and marks the state as in use,
// so a crash is recognised at the next start. When the previous process did not save
// (it crashed, or had too many to save), assertions issued before now + Leeway are
// refused: no earlier iat can prove an assertion was not accepted before the crash.
// Devices sign a fresh assertion and retry; nonce assertions are unaffected. A store
// that has never held the setting (a new install or an upgrade) starts empty.
func (v *Verifier) Restore(ctx context.Context, s SettingStore) error {
	now := v.now()
	raw, err := s.GetSetting(ctx, ReplaySetting)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("restore replay memory: %w", err)
	default:
		var st replayState
		if err := json.Unmarshal(raw, &st); err != nil || !st.Clean {
			v.replay.mu.Lock()
			v.replay.notBefore = now.Add(Leeway)
			v.replay.mu.Unlock()
			break
		}
		v.replay.mu.Lock()
		for k, until := range st.Used {
			if t := time.Unix(until, 0); !now.After(t) {
				v.replay.seen[k] = t
			}
		}
		if st.NotBefore.After(v.replay.notBefore) {
			v.replay.notBefore = st.NotBefore
		}
		v.replay.mu.Unlock()
	}
	b, _ := json.Marshal(replayState{Clean: false, At: now.UTC()})
	if err := s.PutSetting(ctx, ReplaySetting, b); err != nil {
		return fmt.Errorf("mark replay memory in use: %w", err)
	}
	return nil
}

// Save stops accepting assertions and writes the jti values still inside their window,
// for Restore at the next start. Call it after the server has drained.
func (v *Verifier) Save(ctx context.Context, s SettingStore) error {
	now := v.now()
	c := v.replay
	c.mu.Lock()
	c.stopped = true
	c.sweep(now)
	st := replayState{Clean: len(c.seen) <= maxSavedJTIs, At: now.UTC()}
	// A crash cut-off matters only while assertions from before it could still be
	// inside their lifetime; after that it is dropped.
	if !c.notBefore.IsZero() && now.Before(c.notBefore.Add(MaxLifetime+2*Leeway)) {
		st.NotBefore = c.notBefore.UTC()
	}
	if st.Clean {
		st.Used = make(map[string]int64, len(c.seen))
		for k, t := range c.seen {
			// Round up, so a saved entry never ends earlier than the one in memory.
			st.Used[k] = t.Add(time.Second - 1).Unix()
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
