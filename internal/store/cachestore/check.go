package cachestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/store"
)

// checker is a backend that checks its own consistency.
type checker interface {
	Check(ctx context.Context) (store.Report, error)
}

// Check runs the backend's consistency check; the cache holds copies, never the
// truth, so there is nothing of its own to check. It returns an error wrapping
// errors.ErrUnsupported when the backend has no check.
func (s *Store) Check(ctx context.Context) (store.Report, error) {
	c, ok := s.next.(checker)
	if !ok {
		return store.Report{}, fmt.Errorf("check: the backend (%T) has no consistency check: %w", s.next, errors.ErrUnsupported)
	}
	return c.Check(ctx)
}
