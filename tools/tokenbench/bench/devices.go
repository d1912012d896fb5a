package bench

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// LoadDevices reads devices from a file; see ReadDevices.
func LoadDevices(path string) ([]Device, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	devs, err := ReadDevices(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return devs, nil
}

// ReadDevices reads device IDs and HS256 secrets from NDJSON — an import report (as
// written by `tokenctl devices import` or POST /devices/import: lines with deviceId and
// auth.secret; lines without a secret are skipped) or lines of {"deviceId","secret"} —
// or from CSV with a header naming deviceId (or id) and secret columns.
func ReadDevices(r io.Reader) ([]Device, error) {
	br := bufio.NewReader(r)
	first, err := br.Peek(1)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no devices")
		}
		return nil, err
	}
	var devs []Device
	if first[0] == '{' {
		err = scanLines(br, func(l reportLine) error {
			if d, ok := l.device(); ok {
				devs = append(devs, d)
			}
			return nil
		})
	} else {
		devs, err = readDevicesCSV(br)
	}
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return nil, errors.New("no devices with a secret")
	}
	return devs, nil
}

func readDevicesCSV(r io.Reader) ([]Device, error) {
	cr := csv.NewReader(r)
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	idCol, secCol := -1, -1
	for i, h := range head {
		switch strings.TrimSpace(h) {
		case "deviceId", "id":
			idCol = i
		case "secret":
			secCol = i
		}
	}
	if idCol < 0 || secCol < 0 {
		return nil, errors.New("csv header needs deviceId and secret columns")
	}
	var devs []Device
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return devs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("csv: %w", err)
		}
		devs = append(devs, Device{ID: rec[idCol], Secret: rec[secCol]})
	}
}
