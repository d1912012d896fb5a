package storm

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

func describeTLS(cfg Config) string {
	kx := "X25519/P-256 key exchange"
	if cfg.PostQuantum {
		kx = "Go default key exchange (X25519MLKEM768 first)"
	}
	verify := "server certificate verified against -cacert"
	if cfg.Insecure {
		verify = "server certificate NOT verified (-insecure)"
	}
	return "new TCP + TLS connection per exchange, no keep-alive, no session resumption, HTTP/1.1, " + kx + ", " + verify
}

func printReport(w io.Writer, rep Report) {
	fmt.Fprintf(w, "boot storm: %d ES256 devices, %d at once, response body %d bytes\n", rep.Devices, rep.Workers, rep.BodyBytes)
	fmt.Fprintf(w, "TLS: %s\n", rep.TLS)
	fmt.Fprintf(w, "provisioning: %d P-256 keys generated in %.1f s, imported (one streaming POST /devices/import) in %.1f s\n\n",
		rep.Devices+1, time.Duration(rep.KeygenSeconds).Seconds(), time.Duration(rep.ImportSeconds).Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t", r.Name)
	}
	fmt.Fprintln(tw)
	row := func(label string, f func(Result) string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, r := range rep.Results {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	row("devices served", func(r Result) string { return fmt.Sprintf("%d of %d", r.Served, r.Devices) })
	row("failed (error)", func(r Result) string { return fmt.Sprint(r.Failed) })
	row("unfinished at deadline", func(r Result) string { return fmt.Sprint(r.Unfinished) })
	row("time to serve all, s", func(r Result) string { return fmt.Sprintf("%.2f", time.Duration(r.Elapsed).Seconds()) })
	row("throughput, devices/s", func(r Result) string { return fmt.Sprintf("%.0f", r.Throughput) })
	row("exchange p50 / p95 / p99 / max, ms", func(r Result) string {
		return fmt.Sprintf("%.2f / %.2f / %.2f / %.1f", r.P50.Float(), r.P95.Float(), r.P99.Float(), r.Max.Float())
	})
	row("device completion p50 / p99 / max, ms", func(r Result) string {
		return fmt.Sprintf("%.2f / %.2f / %.1f", r.DeviceP50.Float(), r.DeviceP99.Float(), r.DeviceMax.Float())
	})
	row("attempts", func(r Result) string { return fmt.Sprint(r.Attempts) })
	row("refused (429/503 + Retry-After)", func(r Result) string { return bench.Counts(r.Refusals) })
	row("errors", func(r Result) string { return bench.Counts(r.Errors) })
	row("TCP+TLS connections / resumed", func(r Result) string { return fmt.Sprintf("%d / %d", r.Connections, r.Resumed) })
	row("CPU µs per device, tool", func(r Result) string { return fmt.Sprintf("%.0f", r.ClientCPUPerDevice.Float()) })
	row("CPU µs per device, server", func(r Result) string {
		return bench.OrNA(r.ServerCPUPerDevice > 0, fmt.Sprintf("%.0f", r.ServerCPUPerDevice.Float()))
	})
	row("server peak RSS (VmHWM), MiB", func(r Result) string {
		return bench.OrNA(r.ServerPeakRSS > 0, fmt.Sprintf("%.1f", bench.MiB(r.ServerPeakRSS)))
	})
	row("store reads during the storm", func(r Result) string { return storeReads(r.StoreReads) })
	tw.Flush()
	fmt.Fprintf(w, "\ntool peak RSS (VmHWM): %.1f MiB\n", bench.MiB(rep.ToolPeakRSS))
	if rep.Ratio > 0 {
		fmt.Fprintf(w, "throughput tokensvc/baseline: %.2f\n", rep.Ratio)
	}
	printBreakdown(w, rep.Breakdown)
}

// storeReads renders the store-read counters: the Vault key cache's backend reads if
// the service has that cache, else the store's device and hub reads.
func storeReads(m map[string]float64) string {
	if m == nil {
		return "n/a"
	}
	if v, ok := m[bench.KeyCacheReads]; ok {
		return fmt.Sprintf("%.0f Vault reads (key cache misses)", v)
	}
	var parts []string
	for _, k := range bench.StoreReadMetrics[1:] {
		if v, ok := m[k]; ok {
			op := strings.TrimSuffix(strings.TrimPrefix(k, `tokensvc_store_operation_duration_seconds_count{op="`), `"}`)
			parts = append(parts, fmt.Sprintf("%s×%.0f", op, v))
		}
	}
	if len(parts) == 0 {
		return "n/a"
	}
	return "Vault n/a (no key cache); store " + strings.Join(parts, " ")
}
