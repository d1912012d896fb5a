package filestore

import (
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
)

// DefaultDeviceCache is how many decoded devices a Store keeps by default: the token
// path reads a device per request, and opening and decoding its sealed record costs
// tens of allocations, so the devices in use are kept decoded, up to this bound.
const DefaultDeviceCache = 20_000

// hubCacheSize bounds the decoded hubs kept: every token request reads its hub too,
// and hubs are few.
const hubCacheSize = 1024

// WithDeviceCache sets how many decoded devices the store keeps in memory (default
// DefaultDeviceCache; 0 turns the cache off). Each costs about 1 KiB of heap.
func WithDeviceCache(n int) Option {
	return func(o *options) { o.deviceCache = max(n, 0) }
}

// recCache holds decoded records (devices, hubs), bounded, least recently used out
// first (golang-lru). Writes invalidate the records they change once their commit is
// durable. A read that missed takes the generation before it reads the file and may put
// what it read only if no invalidation happened since: otherwise a read that raced a
// write could put back the record the write replaced, after the write invalidated it.
type recCache[V any] struct {
	mu    sync.Mutex // makes the generation check and the put one step
	gen   uint64
	lru   *lru.Cache[string, V] // nil when the cache is off
	clone func(V) V             // so callers never share what the cache holds
}

func newRecCache[V any](max int, clone func(V) V) *recCache[V] {
	c := &recCache[V]{clone: clone}
	if max > 0 {
		c.lru, _ = lru.New[string, V](max) // only a size <= 0 is an error
	}
	return c
}

// get returns a copy of the cached record, and the generation a read after a miss
// must present to put.
func (c *recCache[V]) get(key string) (V, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var v V
	ok := false
	if c.lru != nil {
		v, ok = c.lru.Get(key)
	}
	if ok {
		v = c.clone(v)
	}
	return v, ok, c.gen
}

// put keeps a copy of v under key unless an invalidation happened since gen was taken.
func (c *recCache[V]) put(key string, v V, gen uint64) {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.lru.Add(key, c.clone(v))
}

// invalidate drops key and fails every put of a read that started before.
func (c *recCache[V]) invalidate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if c.lru != nil {
		c.lru.Remove(key)
	}
}

// purge drops every record and fails every put of a read that started before, so no
// decoded record (keys and secrets in clear) outlives the Store's Close in its memory.
func (c *recCache[V]) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if c.lru != nil {
		c.lru.Purge()
	}
}
