package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
)

// ensureHub creates hub (kind iothub, device keys) through the operator API, or leaves
// it if it exists. transit asks for a hub whose keys live in Vault Transit.
func ensureHub(ctx context.Context, client *http.Client, base, adminToken, hub string, transit bool) error {
	body := map[string]any{"name": hub, "kind": "iothub", "hostname": hub + ".azure-devices.net"}
	if transit {
		body["transit"] = true
	}
	b, _ := json.Marshal(body)
	status, resp, err := adminDo(ctx, client, http.MethodPost, base+"/hubs", adminToken, "application/json", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("create hub %s: %w", hub, err)
	}
	if status != http.StatusCreated && status != http.StatusConflict {
		return fmt.Errorf("create hub %s: status %d: %s", hub, status, firstLine(resp))
	}
	return nil
}

// generateKeyDevices makes n ES256 devices named prefix000000… with fresh P-256 keys,
// spread over the CPUs.
func generateKeyDevices(prefix string, n int) ([]keyDevice, error) {
	devs := make([]keyDevice, n)
	workers := max(runtime.GOMAXPROCS(0), 1)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				d, err := newKeyDevice(fmt.Sprintf("%s%06d", prefix, i))
				if err != nil {
					errs[w] = err
					return
				}
				devs[i] = d
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return devs, nil
}

// importKeyDevices registers devs on hub through one streaming POST /devices/import:
// NDJSON lines {"deviceId","hub","auth":{"type":"es256","publicKey"}} written as the
// report streams back. Only public keys leave this process. It fails unless every
// device was created.
func importKeyDevices(ctx context.Context, client *http.Client, base, adminToken, hub string, devs []keyDevice) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeImportLines(pw, hub, devs)) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/devices/import", pr)
	if err != nil {
		pr.Close()
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := client.Do(req)
	if err != nil {
		pr.Close()
		return fmt.Errorf("import devices: %w", err)
	}
	defer resp.Body.Close()
	defer pr.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("import devices: status %d: %s", resp.StatusCode, firstLine(b))
	}
	sum, err := readImportReport(resp.Body)
	if err != nil {
		return fmt.Errorf("import report: %w", err)
	}
	if sum.Created != len(devs) {
		return fmt.Errorf("import: %d of %d devices created (%d skipped, %d rejected; first reason: %s) — device IDs taken? use another -device-prefix",
			sum.Created, len(devs), sum.Skipped, sum.Rejected, sum.FirstReason)
	}
	return nil
}

// writeImportLines writes one NDJSON device line per device.
func writeImportLines(w io.Writer, hub string, devs []keyDevice) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for _, d := range devs {
		pub, err := d.publicKeyPEM()
		if err != nil {
			return err
		}
		line := map[string]any{"deviceId": d.ID, "hub": hub, "auth": map[string]string{"type": "es256", "publicKey": pub}}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// importTally is what an import report said.
type importTally struct {
	Created, Skipped, Rejected int
	FirstReason                string
	Summary                    bool // the summary line arrived
}

// readImportReport reads a streamed import report and counts its lines; the summary
// line must come last and agree. Keys in the report are read and dropped.
func readImportReport(r io.Reader) (importTally, error) {
	var t importTally
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var line struct {
			Result  string `json:"result"`
			Reason  string `json:"reason"`
			Error   string `json:"error"`
			Summary *struct {
				Created, Skipped, Rejected int
			} `json:"summary"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return t, err
		}
		switch line.Result {
		case "created":
			t.Created++
		case "skipped":
			t.Skipped++
		case "rejected":
			t.Rejected++
			if t.FirstReason == "" {
				t.FirstReason = line.Reason
			}
		case "summary":
			t.Summary = true
			if line.Error != "" {
				return t, fmt.Errorf("import stopped: %s", line.Error)
			}
			if s := line.Summary; s == nil || s.Created != t.Created || s.Rejected != t.Rejected || s.Skipped != t.Skipped {
				return t, errors.New("summary disagrees with the report lines")
			}
		}
	}
	if err := sc.Err(); err != nil {
		return t, err
	}
	if !t.Summary {
		return t, errors.New("report ended without a summary")
	}
	return t, nil
}
