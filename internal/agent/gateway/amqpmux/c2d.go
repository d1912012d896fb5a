package amqpmux

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// c2dPool decides which leaves hold one of the bounded C2D receiver slots. A leaf is
// eligible while it wants C2D (its device is subscribed to its C2D topic on the local
// broker) and is on the connection. Up to limit eligible leaves hold a slot; the others wait in FIFO order.
// While any leaf waits, a slot held for dwell or longer is taken back at the next
// rotation (oldest grant first) and given to the longest-waiting leaf; the leaf that
// gave it up goes to the back of the line. So with W eligible leaves and L slots each
// leaf holds a receiver for about dwell in every ceil(W/L)·dwell, and a C2D message,
// which the hub keeps meanwhile, waits at most about (ceil(W/L)-1)·dwell plus one
// rotation tick and an attach. With W ≤ L nothing rotates and nothing waits.
type c2dPool struct {
	limit int
	dwell time.Duration
	now   func() time.Time

	mu      sync.Mutex
	held    map[string]time.Time // leaf -> when it got its slot
	waiting []string             // eligible leaves without a slot, longest-waiting first
	queued  map[string]bool      // the leaves in waiting
	revokes int64                // slots taken back by rotation
}

func newC2DPool(limit int, dwell time.Duration, now func() time.Time) *c2dPool {
	return &c2dPool{limit: limit, dwell: dwell, now: now, held: map[string]time.Time{}, queued: map[string]bool{}}
}

// add makes id eligible; it reports whether id now holds a slot (newly or already).
func (p *c2dPool) add(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.held[id]; ok {
		return true
	}
	if p.queued[id] {
		return false
	}
	if len(p.held) < p.limit {
		p.held[id] = p.now()
		return true
	}
	p.waiting = append(p.waiting, id)
	p.queued[id] = true
	return false
}

// remove makes id ineligible. When id held a slot, the slot goes to the longest-waiting
// leaf, returned as granted ("" when none waits).
func (p *c2dPool) remove(id string) (granted string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queued[id] {
		delete(p.queued, id)
		for i, w := range p.waiting {
			if w == id {
				p.waiting = append(p.waiting[:i], p.waiting[i+1:]...)
				break
			}
		}
		return ""
	}
	if _, ok := p.held[id]; !ok {
		return ""
	}
	delete(p.held, id)
	return p.grantNextLocked()
}

func (p *c2dPool) grantNextLocked() string {
	if len(p.waiting) == 0 {
		return ""
	}
	next := p.waiting[0]
	p.waiting = p.waiting[1:]
	delete(p.queued, next)
	p.held[next] = p.now()
	return next
}

// holds reports whether id holds a slot: whether its receiver should be attached.
func (p *c2dPool) holds(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.held[id]
	return ok
}

// rotate takes back every slot held for dwell or longer, oldest first, as long as a
// leaf waits, and gives each to the longest-waiting leaf. It returns the leaves whose
// receivers must be detached (revoked) and attached (granted).
func (p *c2dPool) rotate() (revoked, granted []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiting) == 0 {
		return nil, nil
	}
	cutoff := p.now().Add(-p.dwell)
	var due []string
	for id, since := range p.held {
		if !since.After(cutoff) {
			due = append(due, id)
		}
	}
	sortBySince(due, p.held)
	for _, id := range due {
		if len(p.waiting) == 0 {
			break
		}
		delete(p.held, id)
		granted = append(granted, p.grantNextLocked())
		p.waiting = append(p.waiting, id)
		p.queued[id] = true
		revoked = append(revoked, id)
		p.revokes++
	}
	return revoked, granted
}

// counts returns the slots held, the leaves waiting and the rotations so far.
func (p *c2dPool) counts() (held, waiting int, revokes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held), len(p.waiting), p.revokes
}

// sortBySince orders ids by their grant time, oldest first (ties by ID).
func sortBySince(ids []string, since map[string]time.Time) {
	slices.SortFunc(ids, func(a, b string) int {
		if c := since[a].Compare(since[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
}
