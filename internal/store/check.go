package store

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInconsistent means a consistency check found records the store's write order
// should never leave behind (Report.Err).
var ErrInconsistent = errors.New("store is inconsistent")

// Problem is one inconsistency a consistency check found: something half-written or
// pointing at nothing, which no crash at any point of the store's write order can
// explain.
type Problem struct {
	// Record names what is wrong, e.g. `device "d1"` or `hub "h"`.
	Record string
	// Reason says what is wrong with it; it never quotes key material.
	Reason string
}

// String returns the problem as one line: record, colon, reason.
func (p Problem) String() string { return p.Record + ": " + p.Reason }

// LeftoverKind names a kind of harmless leftover.
type LeftoverKind string

// Leftovers a store's write order allows an interrupted operation to leave behind.
const (
	// LeftoverIndexEntry is an index entry (e.g. a hub's marker for a device) whose
	// record is gone or elsewhere.
	LeftoverIndexEntry LeftoverKind = "index entry"
	// LeftoverDeviceClaim is a claim on a device ID taken by a create or delete.
	LeftoverDeviceClaim LeftoverKind = "device claim"
	// LeftoverHubClaim is a claim on a hub name taken by a create or delete.
	LeftoverHubClaim LeftoverKind = "hub claim"
	// LeftoverDeletingMark is a hub still marked as being deleted.
	LeftoverDeletingMark LeftoverKind = "deleting mark"
	// LeftoverDeletedRecord is what an interrupted delete left of a record: it reads
	// as absent, and the next create of its name replaces it.
	LeftoverDeletedRecord LeftoverKind = "deleted record"
	// LeftoverKey is key material held outside the records (e.g. a Transit key) that
	// no record refers to.
	LeftoverKey LeftoverKind = "key"
)

// Leftover is something an interrupted operation may leave by design: it belongs to
// no live record, changes no answer and is reclaimed later.
type Leftover struct {
	Kind LeftoverKind
	// Name is the device ID or hub name it belongs to, or the key's name for LeftoverKey.
	Name string
	// Detail says more, for people (e.g. the hub of an index entry).
	Detail string
}

// Report is what a consistency check found.
type Report struct {
	// Hubs and Devices count the records checked.
	Hubs, Devices int
	// Problems are inconsistencies; a consistent store has none.
	Problems []Problem
	// Leftovers are harmless remains of interrupted operations.
	Leftovers []Leftover
	// Unchecked lists what the check could not look at, and why (e.g. a permission the
	// store's credentials lack); it is not a problem.
	Unchecked []string
}

// Problemf records a problem with record.
func (r *Report) Problemf(record, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Record: record, Reason: fmt.Sprintf(format, args...)})
}

// Err returns nil when the report has no problems, else an error wrapping
// ErrInconsistent that lists up to ten of them.
func (r *Report) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	var b strings.Builder
	for i, p := range r.Problems {
		if i == 10 {
			fmt.Fprintf(&b, "; and %d more", len(r.Problems)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return fmt.Errorf("%w: %d problems: %s", ErrInconsistent, len(r.Problems), b.String())
}
