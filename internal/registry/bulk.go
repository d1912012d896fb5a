package registry

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// ImportResult says what importing one device did.
type ImportResult string

// Import results.
const (
	// Imported means the device was created; its generated secrets are in the Created.
	Imported ImportResult = "created"
	// Skipped means an identical device exists already; nothing changed.
	Skipped ImportResult = "skipped"
	// Rejected means the device is invalid or conflicts with an existing one; nothing changed.
	Rejected ImportResult = "rejected"
)

// ImportDevice creates d unless a device with its ID exists. An existing device that
// matches d on everything d states (hub, credential, supplied keys, modules, disabled,
// maxTtl, gateway, parent) is Skipped, so importing the same file twice changes nothing; one that differs
// is Rejected with the reason. A Rejected error is safe to show the caller; any other
// error (e.g. the store is unavailable) is returned as is.
//
// It tries the create first and reads the existing device only when the ID is taken:
// a new device costs the store its writes alone, which is what a bulk import is mostly
// made of. (A line that is invalid in itself is rejected for that before the store is
// asked, whether or not its device exists.)
func (r *Registry) ImportDevice(ctx context.Context, d domain.Device) (Created, ImportResult, error) {
	return r.importDevice(ctx, d, true)
}

func (r *Registry) importDevice(ctx context.Context, d domain.Device, retry bool) (Created, ImportResult, error) {
	fresh := d
	fresh.Modules = slices.Clone(d.Modules) // CreateDevice fills in their keys; d is what the line said
	c, err := r.CreateDevice(ctx, fresh)
	switch {
	case err == nil:
		return c, Imported, nil
	case errors.Is(err, store.ErrExists):
	case errors.Is(err, domain.ErrInvalid), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		return Created{}, Rejected, err
	default:
		return Created{}, "", err
	}
	existing, err := r.store.GetDevice(ctx, d.ID)
	switch {
	case errors.Is(err, store.ErrNotFound) && retry:
		// Deleted meanwhile by someone else: try again.
		return r.importDevice(ctx, d, false)
	case errors.Is(err, store.ErrNotFound):
		return Created{}, Rejected, domain.Public(store.ErrConflict, "device %q keeps being created and deleted meanwhile", d.ID)
	case err != nil:
		return Created{}, "", err
	}
	if diff := differs(existing, d); diff != "" {
		return Created{}, Rejected, domain.Public(store.ErrExists, "device %q exists with a different %s", d.ID, diff)
	}
	return Created{}, Skipped, nil
}

// differs names the first thing want states that got does not match, or "".
func differs(got, want domain.Device) string {
	switch {
	case got.Hub != want.Hub:
		return "hub"
	case got.Auth.Type != want.Auth.Type:
		return "credential type"
	case strings.TrimSpace(got.Auth.PublicKey) != strings.TrimSpace(want.Auth.PublicKey):
		return "public key"
	case got.Auth.CertFingerprint != want.Auth.CertFingerprint:
		return "certificate fingerprint"
	case got.Disabled != want.Disabled:
		return "disabled state"
	case got.MaxTTL != want.MaxTTL:
		return "maxTtlSeconds"
	case got.Gateway != want.Gateway:
		return "gateway flag"
	case got.Parent != want.Parent:
		return "parent"
	}
	if k := keyDiff(got.PrimaryKey, got.SecondaryKey, want.PrimaryKey, want.SecondaryKey); k != "" {
		return k
	}
	if len(got.Modules) != len(want.Modules) {
		return "module list"
	}
	for _, wm := range want.Modules {
		gm, ok := got.Module(wm.ID)
		if !ok {
			return "module list"
		}
		if k := keyDiff(gm.PrimaryKey, gm.SecondaryKey, wm.PrimaryKey, wm.SecondaryKey); k != "" {
			return "module " + wm.ID + " " + k
		}
	}
	return ""
}

// keyDiff compares the keys a line supplies with the stored ones (in constant time;
// they are secrets). Keys held in Vault Transit are not in the record and cannot be
// compared, so supplying them is a difference.
func keyDiff(gotP, gotS, wantP, wantS string) string {
	if wantP != "" && !equalSecret(gotP, wantP) {
		return "primary key"
	}
	if wantS != "" && !equalSecret(gotS, wantS) {
		return "secondary key"
	}
	return ""
}

func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// A Batch imports a stream of devices on several goroutines with the outcome each line
// would have had if the lines were imported one after the other: a line waits for the
// earlier lines it depends on — those with its device ID (the same device twice: the
// second is skipped or rejected, as in order), those naming it as parent (they were
// refused as naming a missing gateway, in order), and, for a line naming a parent, the
// earlier line creating that parent (list a gateway before its children). Lines with
// nothing in common run concurrently; so children of one gateway run together, each
// waiting only for the gateway's line.
//
// Submit must be called from one goroutine, in input order; each Pending is resolved
// when its line is done. A panic while importing a line fails that line only, with an
// error wrapping ErrImportPanicked.
type Batch struct {
	r    *Registry
	ctx  context.Context
	sem  chan struct{}
	jobs chan batchJob // to an idle worker; closed by Wait
	end  sync.Once
	wg   sync.WaitGroup
	mu   sync.Mutex
	keys map[string]*keyState
}

// batchJob is a submitted line on its way to a worker.
type batchJob struct {
	d    domain.Device
	p    *Pending
	wait []*Pending
}

// ErrImportPanicked is wrapped by the error of a line whose import panicked: a bug, not
// the caller's input, so whether the device was created is unknown.
var ErrImportPanicked = errors.New("the import of this line failed unexpectedly")

// keyState orders the lines that touch one device ID: the last line creating it, and
// the lines since that only name it as parent.
type keyState struct {
	writer  *Pending
	readers []*Pending
	users   int // unfinished lines holding this entry
}

// Pending is a submitted line; Done is closed when Result is ready.
type Pending struct {
	done    chan struct{}
	created Created
	result  ImportResult
	err     error
}

// Done is closed when the line is done.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result is ImportDevice's answer for the line; valid once Done is closed.
func (p *Pending) Result() (Created, ImportResult, error) { return p.created, p.result, p.err }

// NewBatch starts a bulk import running at most workers lines at once (at least one).
// ctx bounds every line's store calls; Wait before dropping the Batch.
func (r *Registry) NewBatch(ctx context.Context, workers int) *Batch {
	return &Batch{r: r, ctx: ctx, sem: make(chan struct{}, max(workers, 1)), jobs: make(chan batchJob), keys: map[string]*keyState{}}
}

// Submit starts importing d once a worker is free (it blocks until then) and the lines
// it depends on are done.
//
// The workers are started as lines need them and kept until Wait, at most one per
// line in flight: a goroutine per line would grow a new stack by copies deep in every
// line's store call (≈ 5 % of a 10⁶-device import's CPU samples).
func (b *Batch) Submit(d domain.Device) *Pending {
	p := &Pending{done: make(chan struct{})}
	b.sem <- struct{}{}
	j := batchJob{d: d, p: p, wait: b.enter(d, p)}
	b.wg.Add(1)
	select {
	case b.jobs <- j: // an idle worker took it
	default:
		go b.work(j)
	}
	return p
}

// work imports j, then the lines handed to it until Wait closes jobs.
func (b *Batch) work(j batchJob) {
	for {
		b.run(j)
		var ok bool
		if j, ok = <-b.jobs; !ok {
			return
		}
	}
}

// run imports one line once the lines it depends on are done.
func (b *Batch) run(j batchJob) {
	d, p := j.d, j.p
	defer b.wg.Done()
	defer func() { <-b.sem }()
	defer b.leave(d, p)
	defer close(p.done)
	defer func() {
		if v := recover(); v != nil {
			p.created, p.result = Created{}, ""
			p.err = fmt.Errorf("device %q (%T): %w", d.ID, v, ErrImportPanicked)
		}
	}()
	for _, w := range j.wait {
		<-w.done
	}
	p.created, p.result, p.err = b.r.ImportDevice(b.ctx, d)
}

// Wait returns when every submitted line is done, and ends the Batch: its workers
// stop, and it takes no more lines.
func (b *Batch) Wait() {
	b.wg.Wait()
	b.end.Do(func() { close(b.jobs) })
}

// enter records p as the newest line creating d.ID and naming d.Parent, and returns
// the earlier lines it must wait for.
func (b *Batch) enter(d domain.Device, p *Pending) []*Pending {
	b.mu.Lock()
	defer b.mu.Unlock()
	var wait []*Pending
	k := b.key(d.ID)
	if k.writer != nil {
		wait = append(wait, k.writer)
	}
	wait = append(wait, k.readers...)
	k.writer, k.readers = p, nil
	if d.Parent != "" && d.Parent != d.ID {
		k := b.key(d.Parent)
		if k.writer != nil {
			wait = append(wait, k.writer)
		}
		// Drop readers already done, so a gateway with many children keeps a short list.
		k.readers = slices.DeleteFunc(k.readers, func(r *Pending) bool { return isDone(r) })
		k.readers = append(k.readers, p)
	}
	return wait
}

// leave releases the entries p held.
func (b *Batch) leave(d domain.Device, p *Pending) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(d.ID)
	if d.Parent != "" && d.Parent != d.ID {
		b.release(d.Parent)
	}
}

func (b *Batch) key(id string) *keyState {
	k := b.keys[id]
	if k == nil {
		k = &keyState{}
		b.keys[id] = k
	}
	k.users++
	return k
}

func (b *Batch) release(id string) {
	if k := b.keys[id]; k != nil {
		if k.users--; k.users <= 0 {
			delete(b.keys, id)
		}
	}
}

func isDone(p *Pending) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
