package metrics

import "sync"

// bound caches the children of a metric vector by their label values, so the hot path
// looks a child up in a map instead of hashing its label values into the vector's own
// (WithLabelValues) on every request. A child is bound the first time its label values
// are seen, exactly when WithLabelValues would have created it, so /metrics shows the
// same series. The label sets are bounded (see the package comment), and no series is
// ever deleted, so a cached child never goes stale.
type bound[K comparable, C any] struct {
	mu   sync.RWMutex
	m    map[K]C
	bind func(K) C
}

func newBound[K comparable, C any](bind func(K) C) *bound[K, C] {
	return &bound[K, C]{m: make(map[K]C), bind: bind}
}

// get returns k's child, binding it on first use.
func (b *bound[K, C]) get(k K) C {
	b.mu.RLock()
	c, ok := b.m[k]
	b.mu.RUnlock()
	if ok {
		return c
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok = b.m[k]; !ok {
		c = b.bind(k)
		b.m[k] = c
	}
	return c
}
