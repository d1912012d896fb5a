package bulk

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// rawRecord is about the size of a stored HS256 device record with two keys.
const rawRecord = `{"options":{"cas":0},"data":{"id":"%s","hub":"bench-import","primaryKey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",` +
	`"secondaryKey":"HxoeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=","auth":{"type":"hs256","secret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},` +
	`"createdAt":"2026-12-05T00:00:00Z","updatedAt":"2026-12-05T00:00:00Z"}}`

// rawWrites is the baseline: n KV v2 writes of a device-sized record (check-and-set 0,
// as tokensvc writes a new device) straight to Vault from workers goroutines. A device
// on a KV hub costs tokensvc at least one such write (its record) plus its hub marker,
// so this bounds what any import can reach on the same Vault.
func rawWrites(ctx context.Context, c Config, workers int) (Report, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	cpu, err := bench.StartCPU(0, c.VaultPID)
	if err != nil {
		return Report{}, err
	}
	var next atomic.Int64
	var failed atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(c.Devices) && ctx.Err() == nil && failed.Load() == nil; i = next.Add(1) {
				id := fmt.Sprintf("%sraw-%07d", c.Prefix, i)
				url := fmt.Sprintf("%s/v1/%s/%s", c.VaultAddr, c.RawPath, id)
				req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(fmt.Appendf(nil, rawRecord, id)))
				if err != nil {
					failed.Store(err)
					return
				}
				req.Header.Set("X-Vault-Token", c.VaultToken)
				resp, err := client.Do(req)
				if err != nil {
					failed.Store(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Store(fmt.Errorf("raw KV write: status %d", resp.StatusCode))
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		return Report{}, err
	}
	_, procs, err := cpu.PerOp(c.Devices)
	if err != nil {
		return Report{}, err
	}
	return Report{Label: fmt.Sprintf("raw KV v2 writes, %d workers", workers), Devices: c.Devices, Seconds: took.Seconds(),
		DevicesPerSecond: float64(c.Devices) / took.Seconds(), VaultCPUPerDevice: float64(time.Duration(procs[1])) / 1e3}, ctx.Err()
}
