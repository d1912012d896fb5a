package issuerkeys

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/periodic"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Run reloads the ring from the store every Config.Refresh until ctx ends, so keys
// another replica rotated in are published and used here too. With an issuer URL it
// also creates, at start (and retries on every reload until it succeeds), the first
// key of each algorithm that has none, so the key set holds them before a broker
// first fetches it rather than after the first device asks for a credential. A
// failed reload keeps the keys in memory (and is logged); Run returns nil when ctx
// ends.
func (r *Ring) Run(ctx context.Context) error {
	r.ensure(ctx)
	return periodic.Run(ctx, r.cfg.Refresh, func(ctx context.Context) {
		if _, err := r.reload(ctx); err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "issuer keys not reloaded; serving the keys in memory", "error", err.Error())
			}
			return
		}
		r.ensure(ctx)
	})
}

// ensure creates the first key of each algorithm that has none, when the ring signs
// at all (an issuer URL is set).
func (r *Ring) ensure(ctx context.Context) {
	if r.cfg.Issuer == "" {
		return
	}
	for _, a := range []domain.IssuerAlg{domain.AlgES256, domain.AlgRS256} {
		s, err := r.current(ctx)
		if err == nil && s.signing(a, r.now()) != nil {
			continue
		}
		if err == nil {
			_, err = r.first(ctx, a)
		}
		if err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "issuer key not created; retrying at the next reload", "alg", a, "error", err.Error())
		}
	}
}

// current returns the ring in memory, loading it on first use.
func (r *Ring) current(ctx context.Context) (*snapshot, error) {
	if s := r.snap.Load(); s != nil {
		return s, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked(ctx)
}

// reload reads the ring from the store and replaces the one in memory, first writing
// back the keys held in memory that the store lacks (see write).
func (r *Ring) reload(ctx context.Context) (*snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked(ctx)
}

// reloadLocked is reload with r.mu held.
func (r *Ring) reloadLocked(ctx context.Context) (*snapshot, error) {
	cur, err := r.read(ctx)
	if err != nil {
		return nil, err
	}
	if len(r.missingFrom(cur)) == 0 {
		return r.install(cur)
	}
	return r.write(ctx, func([]storedKey) []storedKey { return nil },
		func(back []storedKey) bool { return len(r.missingFrom(back)) == 0 })
}

// missingFrom returns the keys in memory, still published now, that stored lacks.
func (r *Ring) missingFrom(stored []storedKey) []storedKey {
	s := r.snap.Load()
	if s == nil {
		return nil
	}
	now := r.now()
	var out []storedKey
	for _, k := range s.keys {
		if k.meta.Published(now) && !hasKey(stored, k.meta.ID) {
			out = append(out, k.stored)
		}
	}
	return out
}

// loadLocked returns the ring in memory, or reads it if there is none yet; r.mu held.
func (r *Ring) loadLocked(ctx context.Context) (*snapshot, error) {
	if s := r.snap.Load(); s != nil {
		return s, nil
	}
	cur, err := r.read(ctx)
	if err != nil {
		return nil, err
	}
	return r.install(cur)
}

// read returns the stored keys; none when the setting is unset.
func (r *Ring) read(ctx context.Context) ([]storedKey, error) {
	b, err := r.st.GetSetting(ctx, SettingName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read issuer keys: %w", err)
	}
	ring, err := decodeRing(b)
	if err != nil {
		return nil, err
	}
	return ring.Keys, nil
}

// write applies a change optimistically (see the package documentation): apply
// returns the new key list from the stored one (nil: nothing to write), done says
// whether a read-back shows the change in place. r.mu held.
func (r *Ring) write(ctx context.Context, apply func(cur []storedKey) []storedKey, done func(back []storedKey) bool) (*snapshot, error) {
	for range writeAttempts {
		cur, err := r.read(ctx)
		if err != nil {
			return nil, err
		}
		// Keys held in memory, still published, that the store lacks go back in:
		// settings have no check-and-set update, so another replica's write can replace ours
		// just after it landed (see the package documentation), and this replica may
		// already have signed credentials with the lost key — dropping it from the key
		// set would make them unverifiable for their whole lifetime.
		missing := r.missingFrom(cur)
		if len(missing) > 0 {
			r.log.WarnContext(ctx, "issuer keys: keys held here were missing from the store (a concurrent write replaced ours); writing them back", "keys", len(missing))
		}
		next := apply(cur)
		if next == nil {
			if len(missing) == 0 {
				return r.install(cur)
			}
			next = cur
		}
		next = prune(merge(merge(next, cur), missing), r.now())
		b, err := encodeRing(storedRing{Keys: next})
		if err != nil {
			return nil, err
		}
		if err := r.st.PutSetting(ctx, SettingName, b); err != nil {
			return nil, fmt.Errorf("write issuer keys: %w", err)
		}
		back, err := r.read(ctx)
		if err != nil {
			return nil, err
		}
		if done(back) {
			return r.install(back)
		}
		r.log.WarnContext(ctx, "issuer keys: a concurrent write replaced ours; retrying")
	}
	return nil, errors.New("issuer keys: concurrent writes kept replacing this one; retry")
}

// prune drops keys that stopped being published more than pruneAfter ago.
func prune(ks []storedKey, now time.Time) []storedKey {
	out := ks[:0]
	for _, k := range ks {
		if k.PublishedUntil == nil || now.Sub(*k.PublishedUntil) < pruneAfter {
			out = append(out, k)
		}
	}
	return out
}

// install builds the in-memory ring from stored keys, reusing the signers of keys
// already loaded, and makes it current. A key that does not load is logged and left
// out rather than taking the others down with it.
func (r *Ring) install(stored []storedKey) (*snapshot, error) {
	stored = merge(nil, stored) // sorted copy
	old := r.snap.Load()
	s := &snapshot{keys: make([]*key, 0, len(stored))}
	for _, sk := range stored {
		m, err := sk.meta()
		if err != nil {
			r.log.Error("issuer key left out", "kid", sk.ID, "error", err.Error())
			continue
		}
		k := &key{meta: m, stored: sk, header: jwsHeader(m.Alg, m.ID)}
		if old != nil {
			if ok := old.byID(m.ID); ok != nil {
				k.signer = ok.signer
			}
		}
		if k.signer == nil {
			ds, err := r.be.Signer(m.ID, m.Alg, m.Public, sk.Private)
			if err != nil {
				r.log.Error("issuer key cannot sign here", "kid", m.ID, "error", err.Error())
			} else {
				k.signer = ds
			}
		}
		s.keys = append(s.keys, k)
	}
	r.snap.Store(s)
	return s, nil
}

func marshalPublic(pub crypto.PublicKey) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(pub)
}
