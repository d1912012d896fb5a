package deviceauth

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/internal/periodic"
	"github.com/tokensvc/tokensvc/internal/store"
)

// NonceKeySetting names the store setting that holds the nonce MAC keys every replica
// shares: in the embedded store it is encrypted at rest, with Vault it is a KV record
// beside the devices' secrets (the same mechanism as the issuer key ring's setting).
const NonceKeySetting = "deviceauth.nonce-keys"

// Nonce key schedule.
const (
	// NonceKeyRotation is the age at which a replica rotates a new nonce key in.
	NonceKeyRotation = 24 * time.Hour
	// NonceKeyRefresh is how often NonceKeys.Run reloads the keys from the store.
	NonceKeyRefresh = 30 * time.Second
	// nonceKeysKept is how many keys the setting keeps, newest first: the current one,
	// the previous one (still inside NonceKeyRotation of its successor) and one spare
	// for two replicas rotating at once.
	nonceKeysKept = 3
	// nonceKeyReloadEvery bounds the reloads an unknown kid can cause, so made-up kids
	// cannot make the service hammer the store.
	nonceKeyReloadEvery = time.Second
	nonceKeysVersion    = 1
)

// nonceKey is one MAC key.
type nonceKey struct {
	ID        uint32    `json:"kid"`
	Key       []byte    `json:"key"`
	CreatedAt time.Time `json:"createdAt"`
}

type storedNonceKeys struct {
	Version int        `json:"version"`
	Keys    []nonceKey `json:"keys"`
}

// NonceKeys is the ring of nonce MAC keys: the newest signs, every key held verifies.
// Shared through a store setting, it lets any replica accept a nonce another issued.
// Settings have no check-and-set update (CreateSetting is for an unset one only), so
// a rotation is read, merge, write, read back: two replicas rotating within one
// read-back of each other can leave one replica signing for up to NonceKeyRefresh
// with a key the others do not know (those nonces get 401 elsewhere, and the device
// asks for another). Without a store (NewEphemeralNonceKeys)
// the ring is one key in memory, good for one process.
type NonceKeys struct {
	st  SettingStore
	now func() time.Time
	log *slog.Logger

	keys atomic.Pointer[[]nonceKey] // newest first; never empty once loaded

	mu       sync.Mutex // serialises store reads and writes
	lastRead time.Time
}

// NewNonceKeys returns the ring kept in st's NonceKeySetting. Call Load before use.
func NewNonceKeys(st SettingStore, now func() time.Time, log *slog.Logger) *NonceKeys {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &NonceKeys{st: st, now: now, log: log}
}

// NewEphemeralNonceKeys returns a ring of one random key held in memory only: nonces
// are good on this process and die with it.
func NewEphemeralNonceKeys(now func() time.Time) *NonceKeys {
	k := NewNonceKeys(nil, now, nil)
	ks := []nonceKey{newNonceKey(k.now())}
	k.keys.Store(&ks)
	return k
}

func newNonceKey(now time.Time) nonceKey {
	k := nonceKey{Key: make([]byte, 32), CreatedAt: now.UTC()}
	_, _ = rand.Read(k.Key)
	var id [4]byte
	_, _ = rand.Read(id[:])
	k.ID = binary.BigEndian.Uint32(id[:])
	return k
}

// Load reads the keys from the store, creating the first or rotating in a new one when
// the newest is NonceKeyRotation old. It returns store.ErrUnavailable (wrapped) when the
// store cannot be reached; keys already in memory are kept then.
func (k *NonceKeys) Load(ctx context.Context) error {
	if k.st == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, err := k.readLocked(ctx)
	if err != nil {
		return err
	}
	if len(cur) > 0 && k.now().Sub(cur[0].CreatedAt) < NonceKeyRotation {
		k.install(cur)
		return nil
	}
	next := mergeNonceKeys(append([]nonceKey{newNonceKey(k.now())}, cur...))
	b, err := json.Marshal(storedNonceKeys{Version: nonceKeysVersion, Keys: next})
	if err != nil {
		return fmt.Errorf("write nonce keys: %w", err)
	}
	if err := k.st.PutSetting(ctx, NonceKeySetting, b); err != nil {
		return fmt.Errorf("write nonce keys: %w", err)
	}
	// Read back: if another replica wrote meanwhile, sign with what the store holds.
	back, err := k.readLocked(ctx)
	if err != nil {
		return err
	}
	if len(back) == 0 {
		return errors.New("nonce keys: the setting is empty after writing it")
	}
	k.install(back)
	return nil
}

// Run reloads (and rotates) the keys every NonceKeyRefresh until ctx ends; a failed
// reload keeps the keys in memory and is logged. It returns nil when ctx ends.
func (k *NonceKeys) Run(ctx context.Context) error {
	if k.st == nil {
		return nil
	}
	return periodic.Run(ctx, NonceKeyRefresh, func(ctx context.Context) {
		if err := k.Load(ctx); err != nil && ctx.Err() == nil {
			k.log.WarnContext(ctx, "nonce keys not reloaded; using the keys in memory", "error", err.Error())
		}
	})
}

// readLocked returns the stored keys, newest first; none when the setting is unset.
// k.mu held.
func (k *NonceKeys) readLocked(ctx context.Context) ([]nonceKey, error) {
	k.lastRead = k.now()
	b, err := k.st.GetSetting(ctx, NonceKeySetting)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read nonce keys: %w", err)
	}
	var s storedNonceKeys
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("nonce key setting does not parse: %v", err)
	}
	if s.Version != nonceKeysVersion {
		return nil, fmt.Errorf("nonce key setting has version %d; this build reads %d", s.Version, nonceKeysVersion)
	}
	ks := s.Keys[:0]
	for _, key := range s.Keys {
		if len(key.Key) >= 32 { // a short key would weaken every nonce it tags
			ks = append(ks, key)
		}
	}
	return mergeNonceKeys(ks), nil
}

// mergeNonceKeys orders keys newest first (then by kid, so every replica picks the same
// signing key), drops duplicate kids and keeps nonceKeysKept.
func mergeNonceKeys(ks []nonceKey) []nonceKey {
	ks = slices.Clone(ks)
	slices.SortStableFunc(ks, func(a, b nonceKey) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return int(int64(a.ID) - int64(b.ID))
	})
	ks = slices.CompactFunc(ks, func(a, b nonceKey) bool { return a.ID == b.ID })
	return ks[:min(len(ks), nonceKeysKept)]
}

func (k *NonceKeys) install(ks []nonceKey) {
	if len(ks) > 0 {
		k.keys.Store(&ks)
	}
}

// signing returns the key new nonces are tagged with. A ring never loaded (a caller
// that skipped Load) gets a key of its own in memory, good on this process only.
func (k *NonceKeys) signing() nonceKey {
	if p := k.keys.Load(); p != nil {
		return (*p)[0]
	}
	k.log.Warn("nonce keys used before Load; nonces from this process are good here only")
	ks := []nonceKey{newNonceKey(k.now())}
	k.keys.CompareAndSwap(nil, &ks)
	return (*k.keys.Load())[0]
}

// lookup returns key kid, reloading the ring when kid is unknown (a replica may have
// rotated it in since the last reload) at most every nonceKeyReloadEvery.
func (k *NonceKeys) lookup(ctx context.Context, kid uint32) ([]byte, bool) {
	if key, ok := k.find(kid); ok || k.st == nil {
		return key, ok
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// A reload that finished while this request waited may have brought it.
	if key, ok := k.find(kid); ok || k.now().Sub(k.lastRead) < nonceKeyReloadEvery {
		return key, ok
	}
	ks, err := k.readLocked(ctx)
	if err != nil {
		k.log.WarnContext(ctx, "nonce keys not reloaded for an unknown kid", "error", err.Error())
		return nil, false
	}
	k.install(ks)
	return k.find(kid)
}

func (k *NonceKeys) find(kid uint32) ([]byte, bool) {
	p := k.keys.Load()
	if p == nil {
		return nil, false
	}
	for _, key := range *p {
		if key.ID == kid {
			return key.Key, true
		}
	}
	return nil, false
}
