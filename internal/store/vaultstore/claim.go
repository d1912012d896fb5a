package vaultstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/store"
)

// withClaim runs fn while holding the claim on the hub or device called name (kind
// "hubs" or "devices"), and returns busy when another operation holds it.
//
// A claim is a KV record created with check-and-set 0, so exactly one replica holds it.
// It exists because Transit key names are deterministic: without it, two creates of one
// device could import over each other's keys, or a delete could remove keys a create
// has just imported under the same names. Holding the claim, an operation may treat
// any Transit key under the owner's names as its own or as an orphan.
//
// fn gets a context that ends claimTTL/2 after the claim was taken, and the claim is
// released only if that budget was kept; a claim left by a crash, or by a holder that
// overran, is taken over once it is claimTTL old.
func (s *Store) withClaim(ctx context.Context, kind, name, op string, busy error, fn func(ctx context.Context) error) error {
	path := claimPath(kind, name)
	start := time.Now()
	var owner [16]byte
	_, _ = rand.Read(owner[:])
	rec := claimRecord{Owner: hex.EncodeToString(owner[:]), Op: op, ClaimedAt: s.now().UTC()}

	_, err := s.kvWrite(ctx, path, 0, rec)
	if errors.Is(err, errCASMismatch) {
		var cur claimRecord
		ver, rerr := s.kvRead(ctx, s.cfg.WriteTimeout, path, &cur)
		switch {
		case errors.Is(rerr, store.ErrNotFound):
			// Released between our write and our read.
			_, err = s.kvWrite(ctx, path, 0, rec)
		case rerr != nil:
			return rerr
		case s.now().Sub(cur.ClaimedAt) >= claimTTL:
			s.log.Warn("vaultstore: taking over a stale claim left by an interrupted operation",
				"kind", kind, "op", cur.Op, "claimedAt", cur.ClaimedAt)
			_, err = s.kvWrite(ctx, path, ver, rec)
		default:
			return busy
		}
		if errors.Is(err, errCASMismatch) {
			return busy
		}
	}
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}

	wctx, cancel := context.WithDeadline(ctx, start.Add(claimTTL/2))
	ferr := fn(wctx)
	cancel()
	if time.Since(start) >= claimTTL/2 {
		s.log.Warn("vaultstore: an operation overran its claim; leaving the claim to expire", "kind", kind, "op", op)
		return ferr
	}
	if err := s.kvDelete(context.WithoutCancel(ctx), path); err != nil {
		// Until it expires the claim makes creates and deletes of this name fail as busy.
		s.log.Warn("vaultstore: could not release a claim; it expires on its own", "kind", kind, "op", op, "err", err)
	}
	return ferr
}

// ambiguous reports whether a failed write may nevertheless have reached Vault (a
// timeout, a lost connection, a 5xx), so nothing that depends on it having failed —
// such as deleting the keys it would refer to — may be undone.
func ambiguous(err error) bool {
	if errors.As(err, new(notWritten)) {
		return false
	}
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
