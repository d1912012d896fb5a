package intake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

// Errors of ParseLine.
var (
	// ErrMalformed means the line is not "{leafId} {payload}".
	ErrMalformed = errors.New("want {leafId} {payload}")
	// ErrUnknownLeaf means the leaf ID is not configured.
	ErrUnknownLeaf = errUnknownLeaf
	// ErrProtected means the leaf has a local MQTT password: the line intake, which
	// authenticates nobody, would let anyone on the network send as it.
	ErrProtected = errors.New("leaf has a local password: it sends over MQTT only")
)

// LineOptions configure the line intake.
type LineOptions struct {
	Leaves Leaves
	Sink   Sink
	// Format is how the payload becomes a message: raw (the body) or json
	// ({"body":…,"properties":{…}}), as the agent's own telemetry input.
	Format telemetry.Format
	Now    func() time.Time
	Logger *slog.Logger
}

// LineStats count what the line intake did.
type LineStats struct {
	// Accepted counts stored messages; Unknown lines naming a leaf that is not
	// configured; Protected lines naming a leaf that has a local password; Malformed
	// lines without a leaf ID and payload (or a payload that does not parse, or longer
	// than the intake takes); Failed messages the Sink could not store.
	Accepted, Unknown, Protected, Malformed, Failed int
}

// Lines is the line intake: UDP datagrams and TCP (or any stream's) lines.
type Lines struct {
	o    LineOptions
	log  *slog.Logger
	stat counter.Set[LineStats]

	mu       sync.Mutex
	lastWarn time.Time
	quiet    int
}

// NewLines returns a line intake for o.
func NewLines(o LineOptions) *Lines {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Format == "" {
		o.Format = telemetry.Raw
	}
	return &Lines{o: o, log: o.Logger.With("intake", "line")}
}

// Stats returns a snapshot of the counters.
func (l *Lines) Stats() LineStats { return l.stat.Snapshot() }

// ParseLine splits "{leafId} {payload}" (one space; a trailing CR or LF is dropped)
// and checks the leaf against leaves: a configured leaf without a local password. A
// leaf with one is refused (ErrProtected): lines carry no credential, so anyone who can
// reach the intake could otherwise send as it.
func ParseLine(b []byte, leaves Leaves, f telemetry.Format) (string, telemetry.Message, error) {
	b = bytes.TrimRight(b, "\r\n")
	id, payload, ok := bytes.Cut(b, []byte{' '})
	if !ok || len(id) == 0 || len(payload) == 0 {
		return "", telemetry.Message{}, ErrMalformed
	}
	if !leaves.Known(string(id)) {
		return string(id), telemetry.Message{}, ErrUnknownLeaf
	}
	if leaves[string(id)] != "" {
		return string(id), telemetry.Message{}, ErrProtected
	}
	m, err := telemetry.Parse(payload, f)
	if err != nil {
		return string(id), telemetry.Message{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return string(id), m, nil
}

// Handle takes one line or datagram: parsed, checked and stored, or counted and
// logged as refused.
func (l *Lines) Handle(b []byte) error {
	id, m, err := ParseLine(b, l.o.Leaves, l.o.Format)
	if err == nil {
		if err = l.o.Sink.Put(id, m); err != nil {
			l.stat.Update(func(s *LineStats) { s.Failed++ })
			l.log.Error("leaf message not stored", "leaf", id, "error", err.Error())
			return err
		}
		l.stat.Update(func(s *LineStats) { s.Accepted++ })
		return nil
	}
	l.refuse(id, err)
	return err
}

// refuse counts and logs a refused line.
func (l *Lines) refuse(id string, err error) {
	l.stat.Update(func(s *LineStats) {
		switch {
		case errors.Is(err, ErrUnknownLeaf):
			s.Unknown++
		case errors.Is(err, ErrProtected):
			s.Protected++
		default:
			s.Malformed++
		}
	})
	l.warn(id, err)
}

// maxIDLog is how much of a refused line's leaf ID is logged: a valid ID's length.
const maxIDLog = 128

// warn logs a refused line at once, then at most once every 10 s with how many were
// refused since: a noisy radio must not flood the log.
func (l *Lines) warn(id string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.o.Now()
	if !l.lastWarn.IsZero() && now.Sub(l.lastWarn) < 10*time.Second {
		l.quiet++
		return
	}
	if len(id) > maxIDLog { // anything before the first space: up to the whole line
		id = id[:maxIDLog] + "…"
	}
	s := l.stat.Snapshot()
	l.log.Warn("line refused", "leaf", id, "error", err.Error(), "refusedSinceLastLog", l.quiet+1,
		"unknownTotal", s.Unknown, "protectedTotal", s.Protected, "malformedTotal", s.Malformed)
	l.lastWarn, l.quiet = now, 0
}

// ServeUDP reads datagrams (one message each) from pc until ctx ends.
func (l *Lines) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	l.log.Info("listening", "udp", pc.LocalAddr().String())
	buf := make([]byte, 64<<10)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("udp intake: %w", err)
		}
		_ = l.Handle(buf[:n])
	}
}

// ServeTCP reads lines from every connection to ln until ctx ends.
func (l *Lines) ServeTCP(ctx context.Context, ln net.Listener) error {
	l.log.Info("listening", "tcp", ln.Addr().String())
	return telemetry.ServeConns(ctx, ln, "line intake", func(c net.Conn) error { return l.ServeReader(c) }, l.log)
}

// maxLine is the longest line ServeReader takes: a leaf ID, a space and a payload of
// MaxMessage bytes (a JSON payload's escapes included).
const maxLine = MaxMessage + 256

// ServeReader reads lines from r (a TCP connection, a serial device) until it ends. A
// line longer than the intake takes is refused like a malformed one, and reading goes
// on with the next line: one stream carries many leaves' lines. A line cut off by a
// broken stream is not taken.
func (l *Lines) ServeReader(r io.Reader) error {
	return telemetry.EachLine(r, maxLine, func(line []byte) error {
		if len(bytes.TrimSpace(line)) > 0 {
			_ = l.Handle(line)
		}
		return nil
	}, func() { l.refuse("", fmt.Errorf("%w: line longer than %d bytes", ErrMalformed, maxLine)) })
}
