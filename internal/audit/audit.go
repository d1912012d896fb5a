// Package audit writes one JSON line per security-relevant event: a token issued (or
// refused) to a device, an operator's change to hubs or devices. Records say who, what,
// which device and hub, the token's expiry, the outcome and the request ID. They never
// hold a key, token, signature or assertion: Record has no field that could carry one.
package audit

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Record is one audit event.
type Record struct {
	Time time.Time `json:"time"`
	// Event names what happened, e.g. "token.issue", "hub.create", "device.delete".
	Event string `json:"event"`
	// Actor is who did it: the device for token events, "admin" or the OIDC subject
	// for operator changes.
	Actor string `json:"actor"`
	// Role is the operator's role, for operator changes.
	Role   string `json:"role,omitempty"`
	Device string `json:"device,omitempty"`
	// Gateway is the field gateway that obtained Device's token on its behalf (then
	// also the Actor); empty when the device asked for itself.
	Gateway string `json:"gateway,omitempty"`
	Module  string `json:"module,omitempty"`
	Hub     string `json:"hub,omitempty"`
	// ExpiresAt is the issued token's expiry.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// Serial is an issued device certificate's serial number (hex); never the
	// certificate or its key.
	Serial string `json:"serial,omitempty"`
	// Outcome is "success" or why not (e.g. "forbidden", "not_found", "error").
	Outcome   string `json:"outcome"`
	Status    int    `json:"status,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// Logger writes records as JSON lines to a sink. It is safe for concurrent use; a nil
// *Logger discards everything.
type Logger struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte // the line being written, under mu
	now func() time.Time
	// onError learns of records that could not be written (e.g. disk full).
	onError func(error)
}

// maxKeptBuf bounds the line buffer a Logger keeps between records.
const maxKeptBuf = 4 << 10

// New returns a Logger writing to w; now stamps records that carry no time (time.Now
// when nil); onError, when set, is told of write failures.
func New(w io.Writer, now func() time.Time, onError func(error)) *Logger {
	if now == nil {
		now = time.Now
	}
	return &Logger{w: w, now: now, onError: onError}
}

// Log writes r.
func (l *Logger) Log(r Record) {
	if l == nil || l.w == nil {
		return
	}
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	r.Time = r.Time.UTC()
	l.mu.Lock()
	// The line is built in the logger's own buffer, under the lock its write needs.
	b, ok := appendRecord(l.buf[:0], &r)
	var err error
	if !ok {
		b, err = marshalRecord(l.buf[:0], r)
	}
	if err == nil {
		b = append(b, '\n')
		_, err = l.w.Write(b)
	}
	if cap(b) <= maxKeptBuf {
		l.buf = b
	}
	l.mu.Unlock()
	if err != nil && l.onError != nil {
		l.onError(fmt.Errorf("write audit record: %w", err))
	}
}

// Sink is where records go, parsed from TOKENSVC_AUDIT.
type Sink struct {
	// Kind is "stdout", "file" or "off".
	Kind string
	// Path is the file, for Kind "file".
	Path string
}

// ParseSink reads "stdout", "off" or "file:/path".
func ParseSink(s string) (Sink, error) {
	switch {
	case s == "stdout" || s == "off":
		return Sink{Kind: s}, nil
	case strings.HasPrefix(s, "file:"):
		p := strings.TrimPrefix(s, "file:")
		if p == "" {
			return Sink{}, errors.New("audit sink file: needs a path, e.g. file:/var/log/tokensvc/audit.log")
		}
		return Sink{Kind: "file", Path: p}, nil
	}
	return Sink{}, fmt.Errorf("audit sink %q: want stdout, off or file:/path", s)
}
