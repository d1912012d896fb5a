package cachestore

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

const (
	// maxShards caps the lock striping. Every GetDevice takes one shard lock (a hit
	// moves its entry to the front), so the stripes keep concurrent requests for
	// different devices off each other's lock.
	maxShards = 64
	// minShardEntries keeps small caches in few shards, so a small MaxEntries still
	// evicts close to least-recently-used order instead of per-shard noise.
	minShardEntries = 64
)

// entry is one cached lookup result. Everything but prev and next is written before
// the entry is published under its shard lock and never changed afterwards, so a
// reader that got the pointer under the lock may use val and err after unlocking.
type entry[V any] struct {
	key string
	val V
	// err is the backend's ErrNotFound for a negative entry, nil otherwise.
	err error
	// freshUntil and staleUntil are Unix nanoseconds on the Store's clock: before
	// freshUntil the entry is served as is; before staleUntil it may still be served
	// while the backend is unavailable.
	freshUntil int64
	staleUntil int64

	prev, next *entry[V] // LRU list links, guarded by the shard lock
}

// lru is a bounded map from key to entry, split into shards that each keep their own
// least-recently-used list. Eviction is O(1): drop the tail of the shard being filled.
type lru[V any] struct {
	seed   maphash.Seed
	mask   uint64
	shards []shard[V]
}

// shard is one lock stripe of an lru.
type shard[V any] struct {
	mu    sync.Mutex
	items map[string]*entry[V]
	head  *entry[V] // most recently used
	tail  *entry[V] // least recently used, evicted first
	cap   int
	// gen counts invalidations. A backend read records it before asking the backend
	// and stores its result only if it has not moved, so a read that raced a write
	// cannot put the pre-write record back after the write invalidated it.
	gen uint64
	// hits is kept per shard, next to the lock the hit already holds, so counting
	// hits does not make every core fight over one shared cache line.
	hits atomic.Uint64
	_    [64]byte // keeps neighbouring shards' locks off one cache line
}

// newLRU returns a cache holding at most maxEntries entries (maxEntries >= 1).
func newLRU[V any](maxEntries int) *lru[V] {
	n := 1
	for n < maxShards && maxEntries/(2*n) >= minShardEntries {
		n *= 2
	}
	c := &lru[V]{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]shard[V], n)}
	for i := range c.shards {
		sh := &c.shards[i]
		// Spread the remainder so the shard capacities add up to exactly maxEntries.
		sh.cap = maxEntries / n
		if i < maxEntries%n {
			sh.cap++
		}
		sh.items = make(map[string]*entry[V])
	}
	return c
}

func (c *lru[V]) shard(key string) *shard[V] {
	if c.mask == 0 {
		return &c.shards[0]
	}
	return &c.shards[maphash.String(c.seed, key)&c.mask]
}

// lookup returns the entry for key, if any, marks it recently used and reports
// whether it is fresh at now, counting a hit if so.
func (c *lru[V]) lookup(key string, now int64) (*entry[V], bool) {
	sh := c.shard(key)
	sh.mu.Lock()
	e := sh.items[key]
	fresh := false
	if e != nil {
		sh.moveToFront(e)
		if now < e.freshUntil {
			fresh = true
			sh.hits.Add(1)
		}
	}
	sh.mu.Unlock()
	return e, fresh
}

// peek returns the entry for key without touching its recency, whether it is fresh
// at now, and the generation a backend read starting now must present to put.
func (c *lru[V]) peek(key string, now int64) (*entry[V], bool, uint64) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.items[key]
	return e, e != nil && now < e.freshUntil, sh.gen
}

// put stores e unless key's shard was invalidated since gen was taken, evicting the
// least recently used entry if the shard is full.
func (c *lru[V]) put(e *entry[V], gen uint64) {
	sh := c.shard(e.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gen != gen {
		return
	}
	if old := sh.items[e.key]; old != nil {
		sh.unlink(old)
	}
	sh.items[e.key] = e
	sh.pushFront(e)
	if len(sh.items) > sh.cap {
		victim := sh.tail
		sh.unlink(victim)
		delete(sh.items, victim.key)
	}
}

// drop removes key's entry unless key's shard was invalidated since gen was taken.
func (c *lru[V]) drop(key string, gen uint64) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gen != gen {
		return
	}
	if old := sh.items[key]; old != nil {
		sh.unlink(old)
		delete(sh.items, key)
	}
}

// invalidate removes key's entry and makes every backend read of its shard that is
// already under way discard its result.
func (c *lru[V]) invalidate(key string) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.gen++
	if old := sh.items[key]; old != nil {
		sh.unlink(old)
		delete(sh.items, key)
	}
}

// purge empties the cache and voids every backend read under way.
func (c *lru[V]) purge() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.gen++
		clear(sh.items)
		sh.head, sh.tail = nil, nil
		sh.mu.Unlock()
	}
}

// len returns the number of entries.
func (c *lru[V]) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.items)
		sh.mu.Unlock()
	}
	return n
}

// hits returns the number of fresh lookups.
func (c *lru[V]) hits() uint64 {
	var n uint64
	for i := range c.shards {
		n += c.shards[i].hits.Load()
	}
	return n
}

func (sh *shard[V]) pushFront(e *entry[V]) {
	e.prev, e.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = e
	} else {
		sh.tail = e
	}
	sh.head = e
}

func (sh *shard[V]) unlink(e *entry[V]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (sh *shard[V]) moveToFront(e *entry[V]) {
	if sh.head == e {
		return
	}
	sh.unlink(e)
	sh.pushFront(e)
}
