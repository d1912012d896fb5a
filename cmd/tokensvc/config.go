package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
)

// Config is everything tokensvc is configured with.
type Config struct {
	Addr            string
	Store           string
	DataDir         string
	MasterKey       string
	MasterKeyFile   string
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

	// ClientAuth is "off" or "optional": with optional, TLS clients may present a
	// certificate, and devices with a certificate credential authenticate with it.
	ClientAuth string
	// ClientCA is a PEM file of the CA(s) that issue x509-ca devices' certificates.
	ClientCA string

	Vault  VaultConfig
	Cache  CacheConfig
	Limits limits.Config
	Audit  AuditConfig
	OIDC   OIDCConfig
}

// OIDCConfig enables operator JWTs from an OIDC issuer; off while Issuer is empty.
type OIDCConfig struct {
	Issuer     string
	Audience   string
	JWKSURL    string
	RolesClaim string
	Algorithms []string
	Refresh    time.Duration
}

// AuditConfig says where audit records go.
type AuditConfig struct {
	Sink audit.Sink
	// MaxBytes is the size at which an audit file is rotated; Keep how many old files stay.
	MaxBytes int64
	Keep     int
}

// VaultConfig is the vault store's configuration.
type VaultConfig struct {
	Auth           vaultauth.Config
	KVMount        string
	Prefix         string
	TransitMount   string
	RequestTimeout time.Duration
}

// CacheConfig bounds the in-memory key cache in front of the vault store.
type CacheConfig struct {
	Enabled bool
	TTL     time.Duration
	Size    int
}

// parseConfig reads flags, falling back to TOKENSVC_* environment variables, then to
// defaults. Flags win over the environment.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var c Config
	var level, shutdown string
	fs := flag.NewFlagSet("tokensvc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Addr, "addr", env("TOKENSVC_ADDR", ":8080"), "listen address (TOKENSVC_ADDR)")
	fs.StringVar(&c.Store, "store", env("TOKENSVC_STORE", "embedded"), "key store: embedded or vault (TOKENSVC_STORE)")
	fs.StringVar(&c.DataDir, "data-dir", env("TOKENSVC_DATA_DIR", "data"), "directory of the embedded store (TOKENSVC_DATA_DIR)")
	fs.StringVar(&c.MasterKeyFile, "master-key-file", env("TOKENSVC_MASTER_KEY_FILE", ""), "file holding the embedded store's base64 master key, created 0600 if absent; default <data-dir>/master.key (TOKENSVC_MASTER_KEY_FILE)")
	fs.StringVar(&c.Audience, "audience", env("TOKENSVC_AUDIENCE", "tokensvc"), "aud that device assertions must carry (TOKENSVC_AUDIENCE)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("TOKENSVC_TLS_CERT", ""), "PEM certificate file; serve HTTPS when set with -tls-key (TOKENSVC_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("TOKENSVC_TLS_KEY", ""), "PEM private key file (TOKENSVC_TLS_KEY)")
	fs.StringVar(&c.ClientAuth, "client-auth", env("TOKENSVC_CLIENT_AUTH", "off"), "TLS client certificates for device authentication: off or optional; optional needs -tls-cert (TOKENSVC_CLIENT_AUTH)")
	fs.StringVar(&c.ClientCA, "client-ca", env("TOKENSVC_CLIENT_CA", ""), "PEM file of the CA issuing x509-ca devices' client certificates; needs -client-auth optional (TOKENSVC_CLIENT_CA)")
	var vaultTimeout, cacheTTL, cacheSize, cacheOn string
	v := &c.Vault
	fs.StringVar(&v.Auth.Address, "vault-addr", env("VAULT_ADDR", ""), "Vault address (VAULT_ADDR)")
	fs.StringVar(&v.Auth.CACert, "vault-cacert", env("VAULT_CACERT", ""), "PEM CA file for Vault's TLS certificate (VAULT_CACERT)")
	fs.StringVar(&v.Auth.Namespace, "vault-namespace", env("VAULT_NAMESPACE", ""), "Vault Enterprise namespace (VAULT_NAMESPACE)")
	fs.StringVar((*string)(&v.Auth.Method), "vault-auth", env("TOKENSVC_VAULT_AUTH", "token"), "Vault auth method: token, approle or kubernetes (TOKENSVC_VAULT_AUTH)")
	fs.StringVar(&v.Auth.Mount, "vault-auth-mount", env("TOKENSVC_VAULT_AUTH_MOUNT", ""), "auth method mount path; default the method name (TOKENSVC_VAULT_AUTH_MOUNT)")
	fs.StringVar(&v.Auth.RoleID, "vault-role-id", env("TOKENSVC_VAULT_ROLE_ID", ""), "AppRole role ID (TOKENSVC_VAULT_ROLE_ID)")
	fs.StringVar(&v.Auth.SecretIDFile, "vault-secret-id-file", env("TOKENSVC_VAULT_SECRET_ID_FILE", ""), "file holding the AppRole secret ID (TOKENSVC_VAULT_SECRET_ID_FILE)")
	fs.StringVar(&v.Auth.Role, "vault-k8s-role", env("TOKENSVC_VAULT_K8S_ROLE", ""), "Vault Kubernetes auth role (TOKENSVC_VAULT_K8S_ROLE)")
	fs.StringVar(&v.Auth.TokenFile, "vault-k8s-token-file", env("TOKENSVC_VAULT_K8S_TOKEN_FILE", vaultauth.DefaultKubernetesTokenFile), "service-account JWT file (TOKENSVC_VAULT_K8S_TOKEN_FILE)")
	fs.StringVar(&v.KVMount, "vault-kv-mount", env("TOKENSVC_VAULT_KV_MOUNT", "secret"), "KV v2 mount (TOKENSVC_VAULT_KV_MOUNT)")
	fs.StringVar(&v.Prefix, "vault-prefix", env("TOKENSVC_VAULT_PREFIX", "tokensvc"), "path prefix inside the KV mount, and Transit key name prefix (TOKENSVC_VAULT_PREFIX)")
	fs.StringVar(&v.TransitMount, "vault-transit-mount", env("TOKENSVC_VAULT_TRANSIT_MOUNT", "transit"), "Transit mount (TOKENSVC_VAULT_TRANSIT_MOUNT)")
	fs.StringVar(&vaultTimeout, "vault-timeout", env("TOKENSVC_VAULT_TIMEOUT", "250ms"), "deadline of each Vault call on the request path (TOKENSVC_VAULT_TIMEOUT)")
	fs.StringVar(&cacheOn, "cache", env("TOKENSVC_CACHE", "on"), "in-memory key cache in front of Vault: on or off (TOKENSVC_CACHE)")
	fs.StringVar(&cacheTTL, "cache-ttl", env("TOKENSVC_CACHE_TTL", "60s"), "how long a cached device or hub is fresh (TOKENSVC_CACHE_TTL)")
	fs.StringVar(&cacheSize, "cache-size", env("TOKENSVC_CACHE_SIZE", "100000"), "most devices and hubs cached (TOKENSVC_CACHE_SIZE)")
	fs.StringVar(&level, "log-level", env("TOKENSVC_LOG_LEVEL", "info"), "debug, info, warn or error (TOKENSVC_LOG_LEVEL)")
	fs.StringVar(&shutdown, "shutdown-timeout", env("TOKENSVC_SHUTDOWN_TIMEOUT", "20s"), "how long in-flight requests may drain on SIGTERM (TOKENSVC_SHUTDOWN_TIMEOUT)")
	fs.BoolVar(&c.Pprof, "pprof", env("TOKENSVC_PPROF", "") == "true", "also serve /debug/pprof/ on the metrics address; needs -metrics-addr (TOKENSVC_PPROF=true)")
	var deviceRate, deviceBurst, globalRate, globalBurst, maxInflight, maxHeader, maxHandshakes, auditSink, auditMax, auditKeep string
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env("TOKENSVC_METRICS_ADDR", ""), "serve /metrics on this address instead of the API listener (TOKENSVC_METRICS_ADDR)")
	fs.StringVar(&deviceRate, "device-rate", env("TOKENSVC_DEVICE_RATE", "0.2"), "token requests per second each device may make, sustained; 0 disables (TOKENSVC_DEVICE_RATE)")
	fs.StringVar(&deviceBurst, "device-burst", env("TOKENSVC_DEVICE_BURST", "5"), "token requests a device may make at once (TOKENSVC_DEVICE_BURST)")
	fs.StringVar(&globalRate, "global-rate", env("TOKENSVC_GLOBAL_RATE", "0"), "token and nonce requests per second for the whole service; 0 disables (TOKENSVC_GLOBAL_RATE)")
	fs.StringVar(&globalBurst, "global-burst", env("TOKENSVC_GLOBAL_BURST", "0"), "burst of the service-wide limit; 0 means one second's worth (TOKENSVC_GLOBAL_BURST)")
	fs.StringVar(&maxHandshakes, "max-handshakes", env("TOKENSVC_MAX_HANDSHAKES", "256"), "TLS handshakes run at once; more wait up to 4 s for a slot; 0 disables (TOKENSVC_MAX_HANDSHAKES)")
	fs.StringVar(&maxInflight, "max-inflight", env("TOKENSVC_MAX_INFLIGHT", "1024"), "concurrent requests served before refusing with 503; 0 disables (TOKENSVC_MAX_INFLIGHT)")
	fs.StringVar(&maxHeader, "max-header-bytes", env("TOKENSVC_MAX_HEADER_BYTES", "16384"), "largest request header block accepted (TOKENSVC_MAX_HEADER_BYTES)")
	fs.StringVar(&auditSink, "audit", env("TOKENSVC_AUDIT", "stdout"), "audit records: stdout, off or file:/path (TOKENSVC_AUDIT)")
	fs.StringVar(&auditMax, "audit-max-mb", env("TOKENSVC_AUDIT_MAX_MB", "100"), "audit file size in MiB at which it is rotated (TOKENSVC_AUDIT_MAX_MB)")
	fs.StringVar(&auditKeep, "audit-keep", env("TOKENSVC_AUDIT_KEEP", "5"), "rotated audit files kept (TOKENSVC_AUDIT_KEEP)")
	var oidcAlgs, oidcRefresh string
	o := &c.OIDC
	fs.StringVar(&o.Issuer, "oidc-issuer", env("TOKENSVC_OIDC_ISSUER", ""), "accept operator JWTs from this OIDC issuer (exact iss); empty disables (TOKENSVC_OIDC_ISSUER)")
	fs.StringVar(&o.Audience, "oidc-audience", env("TOKENSVC_OIDC_AUDIENCE", ""), "aud operator JWTs must carry (TOKENSVC_OIDC_AUDIENCE)")
	fs.StringVar(&o.JWKSURL, "oidc-jwks-url", env("TOKENSVC_OIDC_JWKS_URL", ""), "the issuer's JWKS; default from its /.well-known/openid-configuration (TOKENSVC_OIDC_JWKS_URL)")
	fs.StringVar(&o.RolesClaim, "oidc-roles-claim", env("TOKENSVC_OIDC_ROLES_CLAIM", "roles"), "claim holding admin, operator or reader; dots walk into objects (TOKENSVC_OIDC_ROLES_CLAIM)")
	fs.StringVar(&oidcAlgs, "oidc-algorithms", env("TOKENSVC_OIDC_ALGORITHMS", "RS256,ES256"), "comma-separated JWS algorithms accepted (TOKENSVC_OIDC_ALGORITHMS)")
	fs.StringVar(&oidcRefresh, "oidc-refresh", env("TOKENSVC_OIDC_REFRESH", "15m"), "how often the JWKS is refetched (TOKENSVC_OIDC_REFRESH)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	// Secrets come only from the environment, never from flags that show in ps.
	c.AdminToken = getenv("TOKENSVC_ADMIN_TOKEN")
	c.MasterKey = getenv("TOKENSVC_MASTER_KEY")
	c.Vault.Auth.Token = getenv("VAULT_TOKEN")
	c.Vault.Auth.SecretID = getenv("TOKENSVC_VAULT_SECRET_ID")
	var err error
	if c.Vault.RequestTimeout, err = time.ParseDuration(vaultTimeout); err != nil {
		return Config{}, fmt.Errorf("vault timeout %q: %w", vaultTimeout, err)
	}
	if c.Cache.TTL, err = time.ParseDuration(cacheTTL); err != nil {
		return Config{}, fmt.Errorf("cache ttl %q: %w", cacheTTL, err)
	}
	if c.Cache.Size, err = strconv.Atoi(cacheSize); err != nil {
		return Config{}, fmt.Errorf("cache size %q: not a number", cacheSize)
	}
	switch cacheOn {
	case "on", "true", "1":
		c.Cache.Enabled = true
	case "off", "false", "0":
	default:
		return Config{}, fmt.Errorf("cache %q: want on or off", cacheOn)
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return Config{}, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	if c.ShutdownTimeout, err = time.ParseDuration(shutdown); err != nil {
		return Config{}, fmt.Errorf("shutdown timeout %q: %w", shutdown, err)
	}
	if err := parseOps(&c, deviceRate, deviceBurst, globalRate, globalBurst, maxInflight, maxHeader, maxHandshakes, auditSink, auditMax, auditKeep); err != nil {
		return Config{}, err
	}
	for a := range strings.SplitSeq(oidcAlgs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.OIDC.Algorithms = append(c.OIDC.Algorithms, a)
		}
	}
	if c.OIDC.Refresh, err = time.ParseDuration(oidcRefresh); err != nil {
		return Config{}, fmt.Errorf("oidc refresh %q: %w", oidcRefresh, err)
	}
	if c.MasterKeyFile == "" {
		c.MasterKeyFile = filepath.Join(c.DataDir, "master.key")
	}
	return c, c.Validate()
}

// parseOps reads the limits, header bound and audit settings.
func parseOps(c *Config, deviceRate, deviceBurst, globalRate, globalBurst, maxInflight, maxHeader, maxHandshakes, auditSink, auditMax, auditKeep string) error {
	floats := []struct {
		name string
		in   string
		out  *float64
	}{
		{"device rate", deviceRate, &c.Limits.DeviceRate},
		{"global rate", globalRate, &c.Limits.GlobalRate},
	}
	for _, f := range floats {
		v, err := strconv.ParseFloat(f.in, 64)
		if err != nil {
			return fmt.Errorf("%s %q: not a number", f.name, f.in)
		}
		*f.out = v
	}
	var auditMB int
	ints := []struct {
		name string
		in   string
		out  *int
	}{
		{"device burst", deviceBurst, &c.Limits.DeviceBurst},
		{"global burst", globalBurst, &c.Limits.GlobalBurst},
		{"max inflight", maxInflight, &c.Limits.MaxInflight},
		{"max header bytes", maxHeader, &c.MaxHeaderBytes},
		{"max handshakes", maxHandshakes, &c.MaxHandshakes},
		{"audit max mb", auditMax, &auditMB},
		{"audit keep", auditKeep, &c.Audit.Keep},
	}
	for _, f := range ints {
		v, err := strconv.Atoi(f.in)
		if err != nil {
			return fmt.Errorf("%s %q: not a whole number", f.name, f.in)
		}
		*f.out = v
	}
	c.Audit.MaxBytes = int64(auditMB) << 20
	var err error
	if c.Audit.Sink, err = audit.ParseSink(auditSink); err != nil {
		return err
	}
	return nil
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	switch c.Store {
	case "embedded":
		if c.DataDir == "" {
			return errors.New("data dir must be set for the embedded store")
		}
	case "vault":
		if err := c.Vault.Auth.Validate(); err != nil {
			return err
		}
		if c.Vault.KVMount == "" || c.Vault.Prefix == "" || c.Vault.TransitMount == "" {
			return errors.New("vault KV mount, prefix and Transit mount must not be empty")
		}
		if c.Vault.RequestTimeout <= 0 {
			return errors.New("vault timeout must be positive")
		}
		if c.Cache.Enabled && (c.Cache.TTL <= 0 || c.Cache.Size <= 0) {
			return errors.New("cache ttl and cache size must be positive")
		}
	default:
		return fmt.Errorf("store %q: want embedded or vault", c.Store)
	}
	if c.Addr == "" {
		return errors.New("listen address must be set")
	}
	if c.Audience == "" {
		return errors.New("audience must not be empty")
	}
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
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return errors.New("TOKENSVC_ADMIN_TOKEN must be at least 16 characters")
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("shutdown timeout must be positive")
	}
	l := c.Limits
	switch {
	case l.DeviceRate < 0 || l.GlobalRate < 0 || math.IsNaN(l.DeviceRate) || math.IsNaN(l.GlobalRate) || math.IsInf(l.DeviceRate, 0) || math.IsInf(l.GlobalRate, 0):
		return errors.New("device rate and global rate must be finite and not negative")
	case l.DeviceRate > 0 && l.DeviceBurst < 1:
		return errors.New("device burst must be at least 1 when the device rate is set")
	case l.GlobalBurst < 0 || l.MaxInflight < 0:
		return errors.New("global burst and max inflight must not be negative")
	}
	if c.MaxHandshakes < 0 {
		return errors.New("max handshakes must not be negative")
	}
	if c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > 1<<20 {
		return errors.New("max header bytes must be between 4096 and 1048576")
	}
	if c.Audit.Sink.Kind == "file" && (c.Audit.MaxBytes <= 0 || c.Audit.Keep < 0) {
		return errors.New("audit max mb must be positive and audit keep not negative")
	}
	if err := c.OIDC.validate(); err != nil {
		return err
	}
	if c.Pprof && c.MetricsAddr == "" {
		return errors.New("pprof is served on the metrics address only; set TOKENSVC_METRICS_ADDR too")
	}
	if c.MetricsAddr != "" && c.MetricsAddr == c.Addr {
		return errors.New("metrics address must differ from the listen address; leave it empty to serve /metrics there")
	}
	return nil
}

func (o OIDCConfig) validate() error {
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
		if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
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

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
