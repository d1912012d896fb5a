package vaultstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/store"
)

// A KV v2 record whose delete was cut off half way (errHalfDeleted) reads as absent;
// the next create of its name takes it over, here.

// takeOver writes v at rel, which a check-and-set 0 write found taken, if only the
// record's metadata is left (errHalfDeleted); else errCASMismatch.
//
// The write is a check-and-set on the version the metadata names, made once that very
// version is seen to have no data: another creator taking the record over first has
// moved the metadata past it, so of two doing so one wins. Versions restart at 1 when a
// record is deleted in full, so between the check and the write the name may have been
// deleted and created anew up to the same version, and the write then replaced a live
// record: the metadata read after the write tells, by the key's creation time. The
// replaced record is then put back on top and ours destroyed; the name is taken. When
// the metadata is gone after the write, someone deleted the name meanwhile: taken too,
// never success, since whoever recreated it may hold it now.
//
// What is left: in the moment between such a write and its putting back, a reader or
// an update of that name sees our record; and on a mount whose max_versions is 1 the
// replaced version is pruned by our write and cannot be put back (logged).
func (s *Store) takeOver(ctx context.Context, rel string, v any) (int, error) {
	if err := halfDeleted(s.kvRead(ctx, s.cfg.WriteTimeout, rel, &json.RawMessage{})); err != nil {
		return 0, err
	}
	before, err := s.kvMetadata(ctx, rel)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.kvWriteOnce(ctx, rel, 0, v) // its delete has since been finished
	case err != nil:
		return 0, notWritten{fmt.Errorf("take over a half-deleted record: %w", err)}
	}
	cur := before.CurrentVersion
	if err := halfDeleted(s.kvReadVersion(ctx, s.cfg.WriteTimeout, rel, cur, &json.RawMessage{})); err != nil {
		return 0, err
	}
	ver, err := s.kvWriteOnce(ctx, rel, cur, v)
	if err != nil {
		return 0, err
	}
	tidy := context.WithoutCancel(ctx)
	after, err := s.kvMetadata(tidy, rel)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, errCASMismatch
	case err != nil:
		return 0, fmt.Errorf("check a takeover: %w", err) // written, perhaps over a live record
	case after.CreatedTime == before.CreatedTime:
		s.log.Warn("vaultstore: replaced a record whose delete was interrupted", "path", rel)
		return ver, nil
	}
	var replaced json.RawMessage
	defer func() { clear(replaced) }()
	if _, err := s.kvReadVersion(tidy, s.cfg.WriteTimeout, rel, cur, &replaced); err != nil {
		s.log.Error("vaultstore: a takeover replaced a record created meanwhile, and cannot read it back", "path", rel, "err", err)
		return 0, fmt.Errorf("take over a half-deleted record: it was created anew meanwhile and replaced: %w", err)
	}
	if _, err := s.kvWriteOnce(tidy, rel, ver, replaced); err != nil {
		s.log.Error("vaultstore: could not put back a record a takeover replaced", "path", rel, "err", err)
		return 0, fmt.Errorf("put back a record a takeover replaced: %w", err)
	}
	if err := s.kvDestroyVersion(tidy, rel, ver); err != nil {
		s.log.Warn("vaultstore: could not destroy a takeover's version of a record put back", "path", rel, "err", err)
	}
	return 0, errCASMismatch
}

// halfDeleted maps the outcome of reading a record that a check-and-set 0 write found
// taken: nil when only its metadata is left, errCASMismatch when there is a record
// (or none any more, which the caller's next attempt finds), else the read's error,
// marked notWritten.
func halfDeleted(_ int, err error) error {
	switch {
	case errors.Is(err, errHalfDeleted):
		return nil
	case err == nil || errors.Is(err, store.ErrNotFound):
		return errCASMismatch
	}
	return notWritten{fmt.Errorf("read a record found taken: %w", err)}
}

// notWritten marks an error met before a write was sent: whatever its kind (Vault
// unavailable included), the write surely did not happen, so ambiguous is false for it
// and what depends on the write may be undone.
type notWritten struct{ err error }

func (e notWritten) Error() string { return e.err.Error() }
func (e notWritten) Unwrap() error { return e.err }

// metaInfo is what takeOver reads of a record's metadata.
type metaInfo struct {
	CurrentVersion int `json:"current_version"`
	// CreatedTime is when the key was first written; a key deleted in full and
	// written again has a new one.
	CreatedTime string `json:"created_time"`
}

// kvMetadata reads rel's metadata; store.ErrNotFound when there is none.
func (s *Store) kvMetadata(ctx context.Context, rel string) (metaInfo, error) {
	var r struct {
		Data metaInfo `json:"data"`
	}
	err := s.get(ctx, s.cfg.WriteTimeout, s.kvMeta+"/"+rel, nil, &r)
	return r.Data, err
}
