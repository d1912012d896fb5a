package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/tokensvc/tokensvc/internal/metrics"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/tokens"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
)

var _ tokens.TransitSigner = (*vaultstore.Store)(nil)

// backend is the configured store and what the service needs around it.
type backend struct {
	store store.Store
	// transit signs for hubs whose keys live in Vault Transit; nil for the file store.
	transit tokens.TransitSigner
	ready   func(ctx context.Context) (note string, err error)
	// tasks run for the life of the service, e.g. keeping the Vault token alive.
	tasks []func(ctx context.Context) error
}

// openBackend opens the configured store with its backend calls timed by m, and the key
// cache's counters registered with m.
func openBackend(ctx context.Context, cfg Config, log *slog.Logger, m *metrics.Metrics) (*backend, error) {
	switch cfg.Store {
	case "embedded":
		key, err := masterKey(cfg)
		if err != nil {
			return nil, err
		}
		st, err := filestore.Open(filepath.Join(cfg.DataDir, "tokensvc.db"), key, filestore.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open embedded store: %w", err)
		}
		return &backend{store: m.InstrumentStore(st), ready: func(ctx context.Context) (string, error) { return "", st.Ping(ctx) }}, nil
	case "vault":
		return openVault(ctx, cfg, log, m)
	}
	return nil, fmt.Errorf("unknown store %q", cfg.Store)
}

func openVault(ctx context.Context, cfg Config, log *slog.Logger, m *metrics.Metrics) (*backend, error) {
	client, err := vaultauth.NewClient(cfg.Vault.Auth)
	if err != nil {
		return nil, err
	}
	auth := vaultauth.New(client, cfg.Vault.Auth, log)
	// Log in once before serving: without it the service could not even check the admin
	// token. If Vault is down at start, exit and let the supervisor restart us.
	if _, err := auth.Login(ctx); err != nil {
		return nil, err
	}
	vs, err := vaultstore.New(client, vaultstore.Config{
		Mount:          cfg.Vault.KVMount,
		Prefix:         cfg.Vault.Prefix,
		TransitMount:   cfg.Vault.TransitMount,
		RequestTimeout: cfg.Vault.RequestTimeout,
	}, vaultstore.WithLogger(log), vaultstore.WithAuthState(auth.Ready))
	if err != nil {
		return nil, err
	}
	// Timed beneath the cache, so the latency is Vault's and hits do not dilute it.
	var st store.Store = m.InstrumentStore(vs)
	if cfg.Cache.Enabled {
		cs, err := cachestore.New(st, cachestore.Options{TTL: cfg.Cache.TTL, MaxEntries: cfg.Cache.Size})
		if err != nil {
			return nil, err
		}
		m.RegisterCache(cs)
		st = cs
	}
	return &backend{
		store:   st,
		transit: vs,
		// Logged in once at start, the service can serve from its cache whatever Vault
		// does next, so Vault trouble degrades readiness rather than failing it: pulling
		// every replica out of its Service would turn fast 503s into connection errors
		// and strand the devices whose keys are cached.
		ready: func(ctx context.Context) (string, error) {
			if err := auth.Ready(); err != nil {
				return "vault login failing; serving cached keys only", nil
			}
			if err := vs.Ping(ctx); err != nil {
				return "vault unreachable; serving cached keys only", nil
			}
			return "", nil
		},
		tasks: []func(context.Context) error{auth.Run},
	}, nil
}

func masterKey(cfg Config) ([]byte, error) {
	if cfg.MasterKey != "" {
		k, err := filestore.ParseMasterKey(cfg.MasterKey)
		if err != nil {
			return nil, fmt.Errorf("TOKENSVC_MASTER_KEY: %w", err)
		}
		return k, nil
	}
	k, err := filestore.LoadOrCreateMasterKey(cfg.MasterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return k, nil
}
