package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/gateway"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/intake"
	"github.com/tokensvc/tokensvc/internal/agent/gateway/queue"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/domain"
)

// maxQueueMB bounds -queue-max-mb: its bytes must fit an int64.
const maxQueueMB = 1 << 20

// validateGateway checks the gateway-mode options (-gateway).
func (c Config) validateGateway() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Link != "amqp" && c.Link != "mqtt" {
		bad("gateway needs link amqp (one connection for every leaf) or mqtt (one per leaf)")
	}
	if len(c.Leaves) == 0 && c.LeavesFile == "" {
		bad("gateway needs leaves: leaf or leaves-file")
	}
	for _, id := range c.Leaves {
		if !domain.ValidID(id) {
			bad("leaf %q is not a valid IoT Hub device ID", id)
		}
	}
	if c.GatewayMQTT == "" && c.GatewayUDP == "" && c.GatewayLine == "" {
		bad("gateway needs an intake: gateway-mqtt, gateway-udp or gateway-line")
	}
	for name, addr := range map[string]string{"gateway-mqtt": c.GatewayMQTT, "gateway-udp": c.GatewayUDP, "gateway-line": c.GatewayLine} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			bad("%s must be host:port", name)
		}
	}
	if (c.GatewayMQTTCert == "") != (c.GatewayMQTTKey == "") {
		bad("gateway-mqtt-cert and gateway-mqtt-key go together")
	}
	if f := telemetry.Format(c.GatewayLineFormat); f != telemetry.Raw && f != telemetry.JSON {
		bad("gateway-line-format must be raw or json")
	}
	if c.QueueLimit <= 0 || c.QueueMaxMB <= 0 {
		bad("queue-limit and queue-max-mb must be positive")
	}
	if c.QueueMaxMB > maxQueueMB {
		bad("queue-max-mb must be at most %d (1 TiB)", maxQueueMB)
	}
	if c.GatewayWorkers < 1 || c.GatewayWorkers > 1024 {
		bad("gateway-workers must be 1 to 1024")
	}
	if c.GatewayMemoryMB < 0 {
		bad("gateway-memory-limit must be 0 (none) or positive MiB")
	}
	if c.Telemetry != "none" || c.C2D != "none" || c.Module != "" {
		bad("gateway mode takes telemetry from its intakes: telemetry, c2d and module must be unset")
	}
	if len(c.Templates) > 0 || c.Exec != "" || c.Socket != "" {
		bad("gateway mode hands its token to no local program: template, exec and socket must be unset")
	}
	return errs
}

// readLeaves reads the leaves: -leaf IDs and -leaves-file lines "ID [password]" (#
// comments). A file holding passwords must not be readable by group or others.
func readLeaves(ids []string, path string) (intake.Leaves, error) {
	leaves := intake.Leaves{}
	for _, id := range ids {
		leaves[id] = ""
	}
	if path == "" {
		return leaves, nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("leaves-file: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("leaves-file: %w", err)
	}
	passwords := false
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 2 || !domain.ValidID(f[0]) {
			return nil, fmt.Errorf("%s:%d: want a leaf ID and an optional local password", path, n)
		}
		if _, dup := leaves[f[0]]; dup {
			return nil, fmt.Errorf("%s:%d: leaf %q listed twice", path, n, f[0])
		}
		leaves[f[0]] = ""
		if len(f) == 2 {
			leaves[f[0]], passwords = f[1], true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("leaves-file: %w", err)
	}
	if passwords && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("leaves-file %s holds local passwords and is mode %v: chmod 600 it", path, st.Mode().Perm())
	}
	if len(leaves) == 0 {
		return nil, errors.New("no leaves configured")
	}
	return leaves, nil
}

// runGateway is -gateway: the gateway's own credential fetches every leaf's token by
// batch, and the gateway bridges the leaves' intakes to the hub until ctx ends.
func runGateway(ctx context.Context, cfg Config, fc *fetch.Client, roots *x509.CertPool, bo backoff.Policy, log *slog.Logger) error {
	leaves, err := readLeaves(cfg.Leaves, cfg.LeavesFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state-dir: %w", err)
	}
	var mqttTLS *tls.Config
	if cfg.GatewayMQTTCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.GatewayMQTTCert, cfg.GatewayMQTTKey)
		if err != nil {
			return fmt.Errorf("gateway-mqtt-cert: %w", err)
		}
		mqttTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	q, err := queue.Open(queue.Options{Path: filepath.Join(cfg.StateDir, "queue.db"), Limit: cfg.QueueLimit,
		MaxBytes: int64(cfg.QueueMaxMB) << 20, Logger: log})
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Options{
		Leaves: leaves, Batcher: fc, Queue: q, Upstream: cfg.Link, DialAddr: cfg.BrokerAddr, RootCAs: roots, VerifyTime: fc.VerifyTime,
		Properties: cfg.PropertyMap(), MQTTAddr: cfg.GatewayMQTT, MQTTTLS: mqttTLS, UDPAddr: cfg.GatewayUDP,
		LineAddr: cfg.GatewayLine, LineFormat: telemetry.Format(cfg.GatewayLineFormat), Workers: cfg.GatewayWorkers,
		Backoff: bo, Logger: log,
	})
	if err != nil {
		q.Close()
		return err
	}
	if os.Getenv("GOMEMLIMIT") == "" && cfg.GatewayMemoryMB > 0 {
		// Without a limit the heap grows to twice what is live before the collector
		// runs. The default 40 MiB keeps 1,000 connected MQTT leaves within 64 MiB
		// resident (BENCHMARKS §12); the collector then runs more often (its CPU share
		// is in the stats line). The operator's GOMEMLIMIT wins.
		debug.SetMemoryLimit(int64(cfg.GatewayMemoryMB) << 20)
	}
	log.Info("starting gateway", "gateway", cfg.DeviceID, "service", cfg.ServiceForLog(), "leaves", len(leaves),
		"link", cfg.Link, "queue", filepath.Join(cfg.StateDir, "queue.db"))
	return gw.Run(ctx)
}
