package vaultstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/store"
)

// GetSetting returns a named service setting; store.ErrNotFound if unset.
func (s *Store) GetSetting(ctx context.Context, name string) ([]byte, error) {
	if err := s.live(); err != nil {
		return nil, fmt.Errorf("get setting %q: %w", name, err)
	}
	if name == "" {
		return nil, fmt.Errorf("get setting %q: the name is empty", name)
	}
	var rec settingRecord
	if _, err := s.kvRead(ctx, s.cfg.WriteTimeout, settingPath(name), &rec); err != nil {
		return nil, fmt.Errorf("get setting %q: %w", name, err)
	}
	if rec.Value == nil {
		rec.Value = []byte{}
	}
	return rec.Value, nil
}

// PutSetting stores a named service setting, replacing any previous value.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	if err := s.live(); err != nil {
		return fmt.Errorf("put setting %q: %w", name, err)
	}
	if name == "" {
		return fmt.Errorf("put setting %q: the name is empty", name)
	}
	if _, err := s.kvWrite(ctx, settingPath(name), noCAS, settingRecord{Value: value}); err != nil {
		return fmt.Errorf("put setting %q: %w", name, err)
	}
	return nil
}

// CreateSetting stores a named service setting only if it is unset (a check-and-set
// write of version 0); store.ErrExists if it is set.
func (s *Store) CreateSetting(ctx context.Context, name string, value []byte) error {
	if err := s.live(); err != nil {
		return fmt.Errorf("create setting %q: %w", name, err)
	}
	if name == "" {
		return fmt.Errorf("create setting %q: the name is empty", name)
	}
	_, err := s.kvWrite(ctx, settingPath(name), 0, settingRecord{Value: value})
	if errors.Is(err, errCASMismatch) {
		err = store.ErrExists
	}
	if err != nil {
		return fmt.Errorf("create setting %q: %w", name, err)
	}
	return nil
}
