package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
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
	fs.StringVar(&c.Store, "store", env("TOKENSVC_STORE", "embedded"), "key store: embedded (TOKENSVC_STORE)")
	fs.StringVar(&c.DataDir, "data-dir", env("TOKENSVC_DATA_DIR", "data"), "directory of the embedded store (TOKENSVC_DATA_DIR)")
	fs.StringVar(&c.MasterKeyFile, "master-key-file", env("TOKENSVC_MASTER_KEY_FILE", ""), "file holding the embedded store's base64 master key, created 0600 if absent; default <data-dir>/master.key (TOKENSVC_MASTER_KEY_FILE)")
	fs.StringVar(&c.Audience, "audience", env("TOKENSVC_AUDIENCE", "tokensvc"), "aud that device assertions must carry (TOKENSVC_AUDIENCE)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("TOKENSVC_TLS_CERT", ""), "PEM certificate file; serve HTTPS when set with -tls-key (TOKENSVC_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("TOKENSVC_TLS_KEY", ""), "PEM private key file (TOKENSVC_TLS_KEY)")
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
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return Config{}, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	d, err := time.ParseDuration(shutdown)
	if err != nil {
		return Config{}, fmt.Errorf("shutdown timeout %q: %w", shutdown, err)
	}
	c.ShutdownTimeout = d
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
		return errors.New("store vault is not available in this build yet; use embedded")
	default:
		return fmt.Errorf("store %q: want embedded", c.Store)
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
