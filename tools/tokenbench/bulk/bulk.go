// Package bulk is `tokenbench import`: N new HS256 devices registered through one
// streaming POST /devices/import of a running tokensvc on loopback, every report line
// checked; it reports devices per second and, with -server-pid and -vault-pid, the CPU
// time tokensvc and Vault spent per device. scripts/bench-import.sh runs it against
// services started with different -import-workers, one after the other in one run.
package bulk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// Config is one run; flags only, the admin token from the environment.
type Config struct {
	URL, Hub, Prefix, Label string
	Devices                 int
	// Suffix follows the number in every device ID, and Stride multiplies the number:
	// an import with suffix "b" and stride k after one of k×Devices devices without
	// a suffix puts every new device right after an existing one, spread over the
	// whole key range (scripts/bench-import.sh PRELOAD).
	Suffix string
	Stride int
	// Order is "sequential" (device IDs in ascending order, as a numbered fleet
	// exports them) or "random" (the same IDs in a fixed shuffled order, as UUIDs or
	// MAC addresses arrive: every new device lands among the ones already stored).
	Order               string
	Transit, JSON       bool
	ServerPID, VaultPID int
	AdminToken          string
	// RawWorkers > 0 measures raw KV writes to VaultAddr/v1/RawPath (VAULT_TOKEN)
	// instead of an import: the baseline.
	RawWorkers                     int
	VaultAddr, RawPath, VaultToken string
	// Profile fetches tokensvc's own profiles over the import (-pprof-seconds long).
	Profile bench.Profiler
}

// Report is the run, as printed by -json.
type Report struct {
	Label             string  `json:"label,omitempty"`
	Devices           int     `json:"devices"`
	Seconds           float64 `json:"seconds"`
	DevicesPerSecond  float64 `json:"devicesPerSecond"`
	ServerCPUPerDev   float64 `json:"serverCpuUsPerDevice,omitempty"`
	VaultCPUPerDevice float64 `json:"vaultCpuUsPerDevice,omitempty"`
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := bench.NewFlagSet("import", stderr)
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "tokensvc base URL (loopback only)")
	fs.StringVar(&c.Hub, "hub", "bench-import", "hub of the devices (created if absent; kind iothub, device keys)")
	fs.StringVar(&c.Prefix, "device-prefix", "", "device ID prefix (default: imp-<unix nanoseconds>-); the devices must be new")
	fs.StringVar(&c.Label, "label", "", "name of this run in the output (e.g. workers=16)")
	fs.IntVar(&c.Devices, "n", 10_000, "devices to import")
	fs.StringVar(&c.Suffix, "device-suffix", "", "device ID suffix, after the number (e.g. b: each ID sorts right after the unsuffixed one)")
	fs.IntVar(&c.Stride, "id-stride", 1, "multiply each device ID's number by this (spreads -n IDs over a range -id-stride times larger)")
	fs.StringVar(&c.Order, "order", "sequential", "order of the device IDs in the import: sequential or random (a fixed shuffle of the same IDs)")
	fs.BoolVar(&c.Transit, "transit", false, "a hub whose device keys live in Vault Transit (Vault store)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as one JSON line")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "also report this process's (tokensvc's) CPU time per device")
	fs.IntVar(&c.VaultPID, "vault-pid", 0, "also report this process's (Vault's) CPU time per device")
	fs.IntVar(&c.RawWorkers, "raw-kv", 0, "instead of importing, write -n device-sized KV v2 records straight to Vault (-vault-addr, VAULT_TOKEN) from this many workers: the baseline")
	fs.StringVar(&c.VaultAddr, "vault-addr", "", "Vault address for -raw-kv (loopback)")
	fs.StringVar(&c.RawPath, "raw-path", "secret/data/bench-raw", "KV v2 data path the -raw-kv records go under")
	c.Profile.Register(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.AdminToken, c.VaultToken = getenv("TOKENSVC_ADMIN_TOKEN"), getenv("VAULT_TOKEN")
	if c.Prefix == "" {
		c.Prefix = fmt.Sprintf("imp-%d-", time.Now().UnixNano())
	}
	if err := bench.CheckLoopbackURL("-url", c.URL, "http", "https"); err != nil {
		return c, err
	}
	if err := c.Profile.Validate(); err != nil {
		return c, err
	}
	if c.RawWorkers > 0 {
		if err := bench.CheckLoopbackURL("-vault-addr", c.VaultAddr, "http", "https"); err != nil {
			return c, err
		}
		if c.VaultToken == "" {
			return c, errors.New("-raw-kv writes to Vault: set VAULT_TOKEN")
		}
	}
	switch {
	case c.AdminToken == "" && c.RawWorkers == 0:
		return c, errors.New("import provisions devices: set TOKENSVC_ADMIN_TOKEN")
	case c.Devices < 1 || c.Devices > 1_000_000:
		return c, errors.New("-n: 1 to 1000000 devices")
	case c.Order != "sequential" && c.Order != "random":
		return c, fmt.Errorf("-order %q: sequential or random", c.Order)
	case c.Stride < 1 || c.Devices*c.Stride > 10_000_000:
		return c, errors.New("-id-stride: at least 1, and -n × -id-stride at most 10000000 (seven digits)")
	}
	return c, nil
}

// idNumbers returns the number in the i-th line's device ID: i itself, or with order
// "random" a permutation of 0..n-1 that is the same in every run (a fixed seed), so
// runs compare.
func idNumbers(n int, order string) func(i int) int {
	if order != "random" {
		return func(i int) int { return i }
	}
	perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
	return func(i int) int { return perm[i] }
}

// deviceID is the ID of the device numbered n.
func (c Config) deviceID(n int) string {
	return fmt.Sprintf("%s%07d%s", c.Prefix, n*c.Stride, c.Suffix)
}

// Run is `tokenbench import`.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	if c.RawWorkers > 0 {
		r, err := rawWrites(ctx, c, c.RawWorkers)
		if err != nil {
			return err
		}
		return c.print(stdout, r)
	}
	admin, err := bench.NewAdmin(c.URL, c.AdminToken, &http.Client{})
	if err != nil {
		return err
	}
	if err := admin.EnsureHub(ctx, c.Hub, c.Transit); err != nil {
		return err
	}
	cpu, err := bench.StartCPU(c.ServerPID, c.VaultPID)
	if err != nil {
		return err
	}
	number := idNumbers(c.Devices, c.Order)
	profiled := c.Profile.Start(ctx, http.DefaultClient, "import", c.Profile.Max)
	start := time.Now()
	_, err = admin.Import(ctx, c.Devices, func(i int) (oapi.DeviceCreate, error) {
		return oapi.DeviceCreate{DeviceId: c.deviceID(number(i)), Hub: c.Hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}}, nil
	})
	took := time.Since(start)
	if err != nil {
		return err
	}
	if err := profiled(); err != nil {
		return err
	}
	_, procs, err := cpu.PerOp(c.Devices)
	if err != nil {
		return err
	}
	r := Report{Label: c.Label, Devices: c.Devices, Seconds: took.Seconds(), DevicesPerSecond: float64(c.Devices) / took.Seconds(),
		ServerCPUPerDev: float64(time.Duration(procs[0])) / 1e3, VaultCPUPerDevice: float64(time.Duration(procs[1])) / 1e3}
	return c.print(stdout, r)
}

func (c Config) print(stdout io.Writer, r Report) error {
	if c.JSON {
		return bench.WriteJSON(stdout, r)
	}
	what, per := "devices imported", "device"
	if c.RawWorkers > 0 {
		what, per = "records written", "write"
	}
	line := fmt.Sprintf("%s: %d %s in %.2f s: %.0f/s;", r.Label, r.Devices, what, r.Seconds, r.DevicesPerSecond)
	if c.ServerPID > 0 && c.RawWorkers == 0 {
		line += fmt.Sprintf(" tokensvc CPU per %s %.0f µs", per, r.ServerCPUPerDev)
	}
	if c.VaultPID > 0 {
		line += fmt.Sprintf(" Vault CPU per %s %.0f µs", per, r.VaultCPUPerDevice)
	}
	_, err := fmt.Fprintln(stdout, line)
	return err
}
