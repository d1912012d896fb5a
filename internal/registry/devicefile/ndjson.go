package devicefile

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ndjsonSource reads one DeviceCreate per line; a bad line is reported and skipped.
type ndjsonSource struct {
	r    *bufio.Reader
	line int
}

func newNDJSONSource(r io.Reader) *ndjsonSource {
	return &ndjsonSource{r: bufio.NewReaderSize(r, MaxLineBytes)}
}

func (s *ndjsonSource) Next() (Line, error) {
	for {
		b, err := s.r.ReadSlice('\n')
		if len(b) == 0 && err != nil {
			return Line{}, err
		}
		s.line++
		if errors.Is(err, bufio.ErrBufferFull) {
			// Discard the rest of the line and report it; the next line starts fresh.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = s.r.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return Line{}, err
			}
			return Line{Number: s.line, Err: ErrLineTooLong}, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return Line{}, err
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			if err != nil {
				return Line{}, err
			}
			continue
		}
		d, perr := parseDeviceLine(b)
		return Line{Number: s.line, Device: d, Err: perr}, nil
	}
}
