// Package counter keeps a component's counters — a struct of ints the component bumps
// and its Stats method copies — behind one lock, so each component does not write the
// same mutex dance again.
package counter

import "sync"

// Set guards a counters struct T. The zero value is ready to use.
type Set[T any] struct {
	mu sync.Mutex
	v  T
}

// Snapshot returns a copy of the counters.
func (s *Set[T]) Snapshot() T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v
}

// Update applies f to the counters under the lock.
func (s *Set[T]) Update(f func(*T)) {
	s.mu.Lock()
	f(&s.v)
	s.mu.Unlock()
}
