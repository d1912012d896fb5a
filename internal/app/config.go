package app

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"path/filepath"
	"time"

	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
)

// Config is everything the service is configured with. Package configurations are
// held as they are (limits.Config, vaultauth.Config, …), not mirrored field by field.
type Config struct {
	Addr    string
	Store   string // "embedded" or "vault"
	DataDir string
	// MasterKey is the embedded store's base64 key; empty reads (or creates)
	// MasterKeyFile, which defaults to DataDir/master.key.
	MasterKey     string
	MasterKeyFile string
	// AdminToken is the operator bootstrap token; empty uses the stored hash or
	// generates one (printed once on stdout).
	AdminToken      string
	Audience        string
	TLSCert         string
	TLSKey          string
	LogLevel        slog.Level
	ShutdownTimeout time.Duration
	// MetricsAddr serves /metrics on a listener of its own; empty serves it on Addr.
	MetricsAddr string
	// Pprof also serves net/http/pprof under /debug/pprof/ on MetricsAddr (never on
	// the API listener).
	Pprof          bool
	MaxHeaderBytes int
	// MaxHandshakes bounds the TLS handshakes run at once (0: no bound); more wait for a
	// slot instead of sharing the CPU until all of them time out in a boot storm.
	MaxHandshakes int
	// ImportWorkers is how many lines of one bulk import are imported at once (1: one
	// after the other; 0: the default, httpapi.DefaultImportWorkers); the report stays in input order.
	ImportWorkers int
	// StoreCacheSize is how many decoded devices the embedded store keeps in memory
	// (0: none; every read then decrypts its record).
	StoreCacheSize int
	// GCHeapFloorMiB is the heap below which the Go collector does not start a cycle
	// (internal/heapfloor; 0: Go's own 4 MiB). It is process-wide, so the program
	// (cmd/tokensvc) keeps it, not New.
	GCHeapFloorMiB int

	// ClientAuth is "off" or "optional": with optional, TLS clients may present a
	// certificate, and devices with a certificate credential authenticate with it.
	ClientAuth string
	// ClientCA is a PEM file of the CA(s) that issue x509-ca devices' certificates.
	ClientCA string

	// Vault is how to reach and log in to Vault; VaultStore where records live in it.
	Vault      vaultauth.Config
	VaultStore vaultstore.Config
	Cache      CacheConfig
	Limits     limits.Config
	Audit      AuditConfig
	// OIDC enables operator JWTs from an issuer; off while OIDC.Issuer is empty.
	OIDC operatorauth.OIDCConfig
	// Issuer is the issuer key ring that signs JWT credentials: the issuer URL (iss;
	// empty refuses to mint JWT credentials, SAS kinds need none), the publication lead
	// of a rotated-in key and the longest credential lifetime a key may have signed.
	Issuer issuerkeys.Config
	// Replay is the replay store the replicas share; per-process memory while unset.
	Replay ReplayConfig
}

// CacheConfig is the in-memory key cache in front of the vault store.
type CacheConfig struct {
	Enabled bool
	cachestore.Options
}

// AuditConfig says where audit records go.
type AuditConfig struct {
	Sink audit.Sink
	// MaxMB is the size in MiB at which an audit file is rotated; Keep how many old
	// files stay.
	MaxMB int
	Keep  int
}

// maxImportWorkers bounds ImportWorkers: each worker may hold a store call, and a
// Vault-backed import with more than this only queues in Vault.
const maxImportWorkers = 256

// embeddedImportWorkers is the embedded store's default ImportWorkers. Its commit
// groups are as large as the lines in flight, and at 10⁶ devices whose IDs arrive in
// random order a larger group shares more of its B+tree pages: 10⁶-device imports
// went 13,423–16,815/s at 64 lines, 17,585–24,436/s at 256 (BENCHMARKS §19.1).
const embeddedImportWorkers = maxImportWorkers

// importWorkers is ImportWorkers with 0 resolved to the store's default: the
// embedded store's embeddedImportWorkers, or httpapi.DefaultImportWorkers, the
// Vault store's knee (BENCHMARKS §14.2; 256 lines were no faster, §19.1).
func (c Config) importWorkers() int {
	switch {
	case c.ImportWorkers > 0:
		return c.ImportWorkers
	case c.Store == "embedded":
		return embeddedImportWorkers
	}
	return httpapi.DefaultImportWorkers
}

// maxStoreCacheSize bounds StoreCacheSize: about 1 KiB of heap per device, so the
// bound is about 1 GiB.
const maxStoreCacheSize = 1_000_000

// DefaultGCHeapFloorMiB is the default GCHeapFloorMiB (BENCHMARKS §20.2).
const DefaultGCHeapFloorMiB = 64

// maxGCHeapFloorMiB bounds GCHeapFloorMiB (64 GiB).
const maxGCHeapFloorMiB = 64 << 10

// Defaults returns the configuration tokensvc runs with when nothing is set: the
// defaults of its flags and of the README's configuration table.
func Defaults() Config {
	return Config{
		Addr:            ":8080",
		Store:           "embedded",
		DataDir:         "data",
		Audience:        "tokensvc",
		ClientAuth:      "off",
		LogLevel:        slog.LevelInfo,
		ShutdownTimeout: 20 * time.Second,
		MaxHeaderBytes:  16 << 10,
		MaxHandshakes:   256,
		StoreCacheSize:  filestore.DefaultDeviceCache,
		GCHeapFloorMiB:  DefaultGCHeapFloorMiB,
		Vault:           vaultauth.Config{Method: vaultauth.MethodToken, TokenFile: vaultauth.DefaultKubernetesTokenFile},
		VaultStore: vaultstore.Config{
			Mount: "secret", Prefix: "tokensvc", TransitMount: "transit", RequestTimeout: 250 * time.Millisecond,
			PKIMount: vaultstore.DefaultPKIMount, PKIRole: vaultstore.DefaultPKIRole,
			TransitBatchMax:  vaultstore.DefaultTransitBatchMax,
			TransitBatchWait: vaultstore.DefaultTransitBatchWait,
		},
		Cache:  CacheConfig{Enabled: true, Options: cachestore.Options{TTL: cachestore.DefaultTTL, MaxEntries: cachestore.DefaultMaxEntries}},
		Limits: limits.Config{DeviceRate: 0.2, DeviceBurst: 5, MaxInflight: 1024},
		Audit:  AuditConfig{Sink: audit.Sink{Kind: "stdout"}, MaxMB: 100, Keep: 5},
		OIDC:   operatorauth.OIDCConfig{RolesClaim: "roles", Algorithms: []string{"RS256", "ES256"}, Refresh: 15 * time.Minute},
		Issuer: issuerkeys.Config{Lead: issuerkeys.DefaultLead, MaxLifetime: domain.DefaultMax},
	}
}

// storeFile is the embedded store's file in DataDir.
func (c Config) storeFile() string { return filepath.Join(c.DataDir, "tokensvc.db") }

// masterKeyFile is MasterKeyFile, or its default beside the store.
func (c Config) masterKeyFile() string {
	if c.MasterKeyFile != "" {
		return c.MasterKeyFile
	}
	return filepath.Join(c.DataDir, "master.key")
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	if err := c.validateStore(); err != nil {
		return err
	}
	if c.Addr == "" {
		return errors.New("listen address must be set")
	}
	if c.Audience == "" {
		return errors.New("audience must not be empty")
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return errors.New("TOKENSVC_ADMIN_TOKEN must be at least 16 characters")
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("shutdown timeout must be positive")
	}
	if err := validateLimits(c.Limits); err != nil {
		return err
	}
	if c.MaxHandshakes < 0 {
		return errors.New("max handshakes must not be negative")
	}
	if c.ImportWorkers < 0 || c.ImportWorkers > maxImportWorkers {
		return fmt.Errorf("import workers must be between 0 (the default) and %d", maxImportWorkers)
	}
	if c.StoreCacheSize < 0 || c.StoreCacheSize > maxStoreCacheSize {
		return fmt.Errorf("store cache size must be between 0 and %d", maxStoreCacheSize)
	}
	if c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > 1<<20 {
		return errors.New("max header bytes must be between 4096 and 1048576")
	}
	if c.Audit.Sink.Kind == "file" && (c.Audit.MaxMB <= 0 || c.Audit.Keep < 0) {
		return errors.New("audit max mb must be positive and audit keep not negative")
	}
	if err := validateOIDC(c.OIDC); err != nil {
		return err
	}
	if err := validateIssuer(c.Issuer); err != nil {
		return err
	}
	if err := c.Replay.validate(c); err != nil {
		return err
	}
	if c.GCHeapFloorMiB < 0 || c.GCHeapFloorMiB > maxGCHeapFloorMiB {
		return fmt.Errorf("gc heap floor %d MiB: want 0 to %d", c.GCHeapFloorMiB, maxGCHeapFloorMiB)
	}
	if c.Pprof && c.MetricsAddr == "" {
		return errors.New("pprof is served on the metrics address only; set TOKENSVC_METRICS_ADDR too")
	}
	if c.MetricsAddr != "" && c.MetricsAddr == c.Addr {
		return errors.New("metrics address must differ from the listen address; leave it empty to serve /metrics there")
	}
	return nil
}

func (c Config) validateStore() error {
	switch c.Store {
	case "embedded":
		if c.DataDir == "" {
			return errors.New("data dir must be set for the embedded store")
		}
	case "vault":
		if err := c.Vault.Validate(); err != nil {
			return err
		}
		v := c.VaultStore
		if v.Mount == "" || v.Prefix == "" || v.TransitMount == "" {
			return errors.New("vault KV mount, prefix and Transit mount must not be empty")
		}
		if v.RequestTimeout <= 0 {
			return errors.New("vault timeout must be positive")
		}
		if v.TransitBatchMax < 0 || v.TransitBatchMax > vaultstore.MaxTransitBatch {
			return fmt.Errorf("vault transit batch max %d: want 0 to %d", v.TransitBatchMax, vaultstore.MaxTransitBatch)
		}
		if v.TransitBatchWait < 0 || v.TransitBatchWait > v.RequestTimeout {
			return fmt.Errorf("vault transit batch wait %v: want 0 up to the vault timeout (%v)", v.TransitBatchWait, v.RequestTimeout)
		}
		if c.Cache.Enabled && (c.Cache.TTL <= 0 || c.Cache.MaxEntries <= 0) {
			return errors.New("cache ttl and cache size must be positive")
		}
	default:
		return fmt.Errorf("store %q: want embedded or vault", c.Store)
	}
	return nil
}

func (c Config) validateTLS() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls cert and tls key must be set together")
	}
	switch c.ClientAuth {
	case "off":
		if c.ClientCA != "" {
			return errors.New("client ca needs client auth optional")
		}
	case "optional":
		if c.TLSCert == "" {
			return errors.New("client auth optional needs tls cert and tls key: client certificates exist only over TLS")
		}
	default:
		return fmt.Errorf("client auth %q: want off or optional", c.ClientAuth)
	}
	return nil
}

func validateLimits(l limits.Config) error {
	switch {
	case l.DeviceRate < 0 || l.GlobalRate < 0 || math.IsNaN(l.DeviceRate) || math.IsNaN(l.GlobalRate) || math.IsInf(l.DeviceRate, 0) || math.IsInf(l.GlobalRate, 0):
		return errors.New("device rate and global rate must be finite and not negative")
	case l.DeviceRate > 0 && l.DeviceBurst < 1:
		return errors.New("device burst must be at least 1 when the device rate is set")
	case l.GlobalBurst < 0 || l.MaxInflight < 0:
		return errors.New("global burst and max inflight must not be negative")
	}
	return nil
}

func validateOIDC(o operatorauth.OIDCConfig) error {
	if o.Issuer == "" {
		return nil
	}
	if o.Audience == "" {
		return errors.New("oidc audience must be set with the oidc issuer")
	}
	for name, raw := range map[string]string{"oidc issuer": o.Issuer, "oidc jwks url": o.JWKSURL} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%s %q: not an absolute URL", name, raw)
		}
		// Keys fetched over plain HTTP could be swapped in transit; loopback is for tests.
		if u.Scheme != "https" && !(u.Scheme == "http" && cliflags.IsLoopback(u.Hostname())) {
			return fmt.Errorf("%s %q: must be https", name, raw)
		}
	}
	if o.RolesClaim == "" {
		return errors.New("oidc roles claim must not be empty")
	}
	if len(o.Algorithms) == 0 {
		return errors.New("oidc algorithms must not be empty")
	}
	if o.Refresh < time.Minute {
		return errors.New("oidc refresh must be at least 1m")
	}
	return nil
}

// validateIssuer checks the issuer key ring's settings. The issuer URL is optional
// (only JWT kinds need it, and hubs come and go at run time); when set it must be an
// absolute https URL (http on loopback, for tests) with nothing after the path.
func validateIssuer(i issuerkeys.Config) error {
	if i.Issuer != "" {
		u, err := url.Parse(i.Issuer)
		if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("issuer url %q: want an absolute URL without query, fragment or user", i.Issuer)
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && cliflags.IsLoopback(u.Hostname())) {
			return fmt.Errorf("issuer url %q: must be https", i.Issuer)
		}
	}
	if i.Lead < issuerkeys.MinLead {
		return fmt.Errorf("issuer key lead %v: must be at least %v (the key set's max-age plus the ring's reload interval)", i.Lead, issuerkeys.MinLead)
	}
	if i.MaxLifetime < time.Minute {
		return errors.New("issuer max lifetime must be at least 1m")
	}
	return nil
}
