package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// provision creates one iothub hub (if absent) and n HS256 devices through the operator
// API's bulk import — one streaming request however many devices — and returns each
// device's ID and secret from the import report.
func provision(ctx context.Context, client *http.Client, base, adminToken, hub, prefix string, n int) ([]Device, error) {
	hubBody, _ := json.Marshal(map[string]string{"name": hub, "kind": "iothub", "hostname": hub + ".azure-devices.net"})
	status, body, err := adminDo(ctx, client, http.MethodPost, base+"/hubs", adminToken, "application/json", bytes.NewReader(hubBody))
	if err != nil {
		return nil, fmt.Errorf("create hub: %w", err)
	}
	if status != http.StatusCreated && status != http.StatusConflict {
		return nil, fmt.Errorf("create hub: status %d: %s", status, body)
	}
	var lines bytes.Buffer
	enc := json.NewEncoder(&lines)
	for i := range n {
		line := map[string]any{"deviceId": fmt.Sprintf("%s%06d", prefix, i), "hub": hub, "auth": map[string]string{"type": "hs256"}}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
	}
	status, body, err = adminDo(ctx, client, http.MethodPost, base+"/devices/import", adminToken, "application/x-ndjson", &lines)
	if err != nil {
		return nil, fmt.Errorf("import devices: %w", err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("import devices: status %d: %s", status, firstLine(body))
	}
	devs, err := readDevices(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("import report: %w", err)
	}
	if len(devs) != n {
		return nil, fmt.Errorf("import report: %d of %d devices created (device IDs taken? use another -device-prefix)", len(devs), n)
	}
	return devs, nil
}

func adminDo(ctx context.Context, client *http.Client, method, url, token, contentType string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	return resp.StatusCode, b, err
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// loadDevices reads devices from a file; see readDevices.
func loadDevices(path string) ([]Device, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	devs, err := readDevices(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return devs, nil
}

// readDevices reads device IDs and HS256 secrets from NDJSON — an import report (as
// written by `tokenctl devices import` or POST /devices/import: lines with deviceId and
// auth.secret; lines without a secret are skipped) or lines of {"deviceId","secret"} —
// or from CSV with a header naming deviceId (or id) and secret columns.
func readDevices(r io.Reader) ([]Device, error) {
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
		sc := bufio.NewScanner(br)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				DeviceID string `json:"deviceId"`
				Secret   string `json:"secret"`
				Auth     struct {
					Secret string `json:"secret"`
				} `json:"auth"`
			}
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				return nil, fmt.Errorf("ndjson: %w", err)
			}
			secret := cmp.Or(line.Secret, line.Auth.Secret)
			if line.DeviceID != "" && secret != "" {
				devs = append(devs, Device{ID: line.DeviceID, Secret: secret})
			}
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	} else {
		cr := csv.NewReader(br)
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
		for {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("csv: %w", err)
			}
			devs = append(devs, Device{ID: rec[idCol], Secret: rec[secCol]})
		}
	}
	if len(devs) == 0 {
		return nil, errors.New("no devices with a secret")
	}
	return devs, nil
}
