package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/registry/devicefile"
)

// importRun is one import under way. A reader goroutine parses the body in order and
// submits each line to a registry.Batch, which imports up to ImportWorkers lines at
// once; the handler's goroutine writes the report lines in input order as each line
// is done, and flushes them to the client whenever it is about to wait (one write for
// every run of lines that are done together, not one per line). Between them the
// items channel is the reorder buffer: the reader stops reading while it is full, so
// memory stays bounded whatever the size of the body.
//
// A store failure (or a line that failed unexpectedly) stops the import as it did
// one line at a time: no line after it is submitted, the lines already under way are
// finished and reported, and the summary names the failed line. Lines run on a
// context the client's disconnection does not cancel, so a line under way is never
// cut in the middle by a body read that fails; once a report line cannot be written
// the rest are canceled.
type importRun struct {
	st     *importStream
	rc     *http.ResponseController
	emitTo func(importReport) error // writes a report line, unflushed
	sum    importSummary
	// unflushed: report lines were written since the last flush.
	unflushed bool

	stop     chan struct{} // closed when no further line may be submitted
	haltOnce sync.Once
	// readStop is why the reader stopped early, "" at the end of the body; written
	// before items is closed.
	readStop string
}

// importItem is a line in the reorder buffer: submitted (pending) or refused by the
// parser (reason).
type importItem struct {
	line    int
	id      string
	pending *registry.Pending
	reason  string
}

func (ir *importRun) run() error {
	st := ir.st
	workers := st.s.deps.ImportWorkers
	if workers <= 0 {
		workers = DefaultImportWorkers
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(st.ctx))
	defer cancel()
	batch := st.s.deps.Registry.NewBatch(lctx, workers)
	ir.stop = make(chan struct{})
	items := make(chan importItem, 2*workers)
	go ir.read(batch, items)

	var fatal string
	var failedLine, later int
	var werr error
	for {
		it, ok := receive(ir, items)
		if !ok {
			break
		}
		if werr != nil {
			continue // the client is gone: drain what was submitted
		}
		rep, err := ir.outcome(it)
		if err != nil {
			st.s.log.ErrorContext(st.ctx, "import failed", "line", it.line, "error", err.Error())
			if fatal == "" {
				failedLine = it.line
				fatal = fmt.Sprintf("line %d: %s; the import stopped here, lines before it are done", it.line, storeTrouble(err))
				ir.halt()
			}
			continue
		}
		if failedLine > 0 {
			later++
		}
		if werr = ir.emit(rep); werr != nil {
			cancel()
			ir.halt()
		}
	}
	batch.Wait()
	if werr != nil {
		s := ir.sum
		st.s.log.InfoContext(st.ctx, "devices imported", "created", s.Created, "skipped", s.Skipped, "rejected", s.Rejected, "stopped", true, "reportLost", true)
		return werr
	}
	if fatal != "" && later > 0 {
		fatal += fmt.Sprintf(", and so are the %d later lines reported above, which were already under way", later)
	}
	if fatal == "" {
		fatal = ir.readStop
	}
	s := ir.sum
	st.s.log.InfoContext(st.ctx, "devices imported", "created", s.Created, "skipped", s.Skipped, "rejected", s.Rejected, "stopped", fatal != "")
	if err := ir.emit(importReport{Result: "summary", Summary: &s, Error: fatal}); err != nil {
		return err
	}
	ir.flush()
	return nil
}

// emit writes a report line, to be flushed before the run next waits.
func (ir *importRun) emit(r importReport) error {
	ir.unflushed = true
	return ir.emitTo(r)
}

// flush sends the report lines written since the last flush to the client.
func (ir *importRun) flush() {
	if ir.unflushed {
		ir.unflushed = false
		_ = ir.rc.Flush()
	}
}

// receive takes the next value from ch, flushing ir's report first when none is ready.
func receive[T any](ir *importRun, ch <-chan T) (T, bool) {
	select {
	case v, ok := <-ch:
		return v, ok
	default:
		ir.flush()
		v, ok := <-ch
		return v, ok
	}
}

// halt stops the reader: no line is submitted after it returns (but one already being
// submitted is still handed over), and a read waiting for the body gives up at once.
func (ir *importRun) halt() {
	ir.haltOnce.Do(func() {
		close(ir.stop)
		// After close: a reader that set its own deadline before this sees stop closed.
		_ = ir.rc.SetReadDeadline(time.Now())
	})
}

func (ir *importRun) stopped() bool {
	select {
	case <-ir.stop:
		return true
	default:
		return false
	}
}

// read parses the body line by line and submits each line, until the end of the body,
// a body that cannot be read on, or halt. Every submitted line goes into items.
func (ir *importRun) read(batch *registry.Batch, items chan<- importItem) {
	defer close(items)
	for {
		_ = ir.rc.SetReadDeadline(time.Now().Add(importIdle))
		if ir.stopped() {
			return
		}
		l, err := ir.st.src.Next()
		if errors.Is(err, io.EOF) || (err != nil && ir.stopped()) {
			return
		}
		if err != nil {
			ir.readStop = "reading the body failed; the import stopped here"
			if errors.Is(err, devicefile.ErrLineTooLong) {
				ir.readStop = err.Error() + "; the import stopped here"
			} else if pe, ok := errors.AsType[*domain.PublicError](err); ok {
				ir.readStop = pe.Public() + "; the import stopped here"
			}
			return
		}
		it := importItem{line: l.Number, id: l.Device.DeviceId}
		if l.Err != nil {
			it.reason = l.Err.Error()
		} else {
			if ir.stopped() {
				return
			}
			it.pending = batch.Submit(deviceFromAPI(l.Device))
		}
		items <- it
	}
}

// outcome waits for the item's line and returns its report line, counted in the
// summary, or the error that stops the import.
func (ir *importRun) outcome(it importItem) (importReport, error) {
	rep := importReport{Line: it.line, DeviceID: it.id}
	if it.pending == nil {
		ir.sum.Rejected++
		rep.Result, rep.Reason = string(registry.Rejected), it.reason
		return rep, nil
	}
	receive(ir, it.pending.Done())
	c, result, err := it.pending.Result()
	if err != nil && result == "" {
		return rep, err
	}
	rep.Result = string(result)
	switch result {
	case registry.Imported:
		ir.sum.Created++
		d := c.Device
		ir.st.s.log.InfoContext(ir.st.ctx, "device created", "device", d.ID, "hub", d.Hub, "auth", d.Auth.Type, "via", "import")
		rep.PrimaryKey, rep.SecondaryKey = d.PrimaryKey, d.SecondaryKey
		rep.Auth = &importedAuth{Type: string(d.Auth.Type), Secret: c.Secret}
		for _, m := range d.Modules {
			rep.Modules = append(rep.Modules, importedModule{m.ID, m.PrimaryKey, m.SecondaryKey})
		}
	case registry.Skipped:
		ir.sum.Skipped++
	default:
		ir.sum.Rejected++
		rep.Reason = clientReason(err)
	}
	return rep, nil
}
