package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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

	Vault VaultConfig
	Cache CacheConfig
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
	if c.MasterKeyFile == "" {
		c.MasterKeyFile = filepath.Join(c.DataDir, "master.key")
	}
	return c, c.Validate()
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
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return errors.New("TOKENSVC_ADMIN_TOKEN must be at least 16 characters")
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("shutdown timeout must be positive")
	}
	return nil
}
