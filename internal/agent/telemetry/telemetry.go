// Package telemetry reads the messages the agent sends for local programs: one message
// a line, from standard input or from a local Unix socket, as raw text or as JSON with
// properties.
package telemetry

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/tokensvc/tokensvc/internal/agent/unixsock"
)

// Message is one telemetry message.
type Message struct {
	Body []byte
	// Properties are application properties (MQTT: the topic's property bag; AMQP:
	// application-properties).
	Properties map[string]string
}

// Format is how a line becomes a message.
type Format string

// Formats.
const (
	// Raw sends the line as the body.
	Raw Format = "raw"
	// JSON reads {"body": <string or any JSON>, "properties": {"k": "v"}}.
	JSON Format = "json"
)

// MaxLine bounds one message.
const MaxLine = 256 << 10

// Parse turns one line into a message.
func Parse(line []byte, f Format) (Message, error) {
	if f != JSON {
		return Message{Body: append([]byte(nil), line...)}, nil
	}
	var in struct {
		Body       json.RawMessage   `json:"body"`
		Properties map[string]string `json:"properties"`
	}
	if err := json.Unmarshal(line, &in); err != nil {
		return Message{}, fmt.Errorf("telemetry line is not a JSON object with body and properties: %w", err)
	}
	m := Message{Properties: in.Properties}
	var s string
	if json.Unmarshal(in.Body, &s) == nil {
		m.Body = []byte(s)
	} else {
		m.Body = []byte(in.Body)
	}
	return m, nil
}

// ReadLines sends every line of r to out until r ends (nil), ctx ends (its error) or
// reading fails. Lines that do not parse, and lines longer than MaxLine, are logged and
// skipped.
func ReadLines(ctx context.Context, r io.Reader, f Format, out chan<- Message, log *slog.Logger) error {
	return EachLine(r, MaxLine, func(line []byte) error {
		if len(line) == 0 {
			return nil
		}
		m, err := Parse(line, f)
		if err != nil {
			log.Warn("telemetry line skipped", "error", err.Error())
			return nil
		}
		select {
		case out <- m:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, func() { log.Warn("telemetry line skipped", "error", fmt.Sprintf("longer than %d bytes", MaxLine)) })
}

// EachLine calls fn with every line of r, without its line end ("\n" or "\r\n"), and
// tooLong for every line longer than max bytes, which is skipped; either way reading
// goes on with the next line. A last line without a line end is taken at a clean EOF
// only: a line cut off by a broken stream is not. fn must not keep the slice. EachLine
// returns nil at EOF, fn's first error, or the read error.
func EachLine(r io.Reader, max int, fn func(line []byte) error, tooLong func()) error {
	br := bufio.NewReaderSize(r, 4<<10)
	var line []byte
	skipping := false
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case skipping:
		case len(line)+len(chunk) > max+2: // the line and its "\r\n"
			skipping, line = true, line[:0]
		default:
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // the rest of the line follows
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		end := len(line)
		if end > 0 && line[end-1] == '\n' {
			end--
			if end > 0 && line[end-1] == '\r' {
				end--
			}
		}
		switch {
		case skipping:
			tooLong()
		case end > max:
			tooLong()
		case err == nil || end > 0:
			if ferr := fn(line[:end]); ferr != nil {
				return ferr
			}
		}
		line, skipping = line[:0], false
		if err != nil { // io.EOF
			return nil
		}
	}
}

// ServeSocket listens on a Unix stream socket at path (mode 0660) and reads lines from
// every connection into out until ctx ends.
func ServeSocket(ctx context.Context, path string, f Format, out chan<- Message, log *slog.Logger) error {
	ln, err := unixsock.Listen(path, 0o660)
	if err != nil {
		return fmt.Errorf("telemetry socket: %w", err)
	}
	return ServeConns(ctx, ln, "telemetry socket", func(c net.Conn) error { return ReadLines(ctx, c, f, out, log) }, log)
}

// ServeConns accepts connections on ln until ctx ends (then it closes ln) and runs
// serve on each in its own goroutine, closing the connection when serve returns or
// ctx ends; a failure of serve while ctx lasts is logged. It returns once every serve
// has returned: nil when ctx ended or ln was closed, else Accept's error, wrapped
// with what (the intake's name, as in "telemetry socket").
func ServeConns(ctx context.Context, ln net.Listener, what string, serve func(net.Conn) error, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		wg.Go(func() {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			if err := serve(c); err != nil && ctx.Err() == nil {
				log.Warn(what+": connection failed", "error", err.Error())
			}
		})
	}
}
