package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/cachestore"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/tokens"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
)

var (
	_ tokens.TransitSigner   = (*vaultstore.Store)(nil)
	_ issuerkeys.TransitKeys = (*vaultstore.Store)(nil)
)

// backend is the configured store and what the service needs around it.
type backend struct {
	store store.Store
	// transit signs for hubs whose keys live in Vault Transit; nil for the file store.
	transit tokens.TransitSigner
	// issuerKeys holds the issuer key ring's private keys: in the ring's setting with
	// the embedded store (encrypted at rest), in Vault Transit with the Vault store.
	issuerKeys issuerkeys.Backend
	// ca signs device certificates: a CA per hub in the (encrypted) store settings
	// with the embedded store, Vault's PKI engine with the Vault store.
	ca devicecert.Authority
	// backup copies the embedded store (POST /store/backup); nil with Vault.
	backup httpapi.StoreBackup
	ready  func(ctx context.Context) (note string, err error)
	// tasks run for the life of the service, e.g. keeping the Vault token alive.
	tasks []func(ctx context.Context) error
}

// pinger is a store that can tell whether its backend answers.
type pinger interface {
	Ping(ctx context.Context) error
}

// newBackend opens the configured store (or takes the one given with WithStore) with
// its backend calls timed by the metrics, and the key cache's counters registered.
func (a *App) newBackend(ctx context.Context) (*backend, error) {
	if st := a.o.store; st != nil {
		// A store of the caller's own (tests) keeps issuer private keys in its settings.
		be := &backend{store: a.metrics.InstrumentStore(st), issuerKeys: issuerkeys.Local(), ready: func(context.Context) (string, error) { return "", nil }}
		be.ca = devicecert.NewLocal(be.store, a.o.now) // like the issuer keys: in the store's settings
		if p, ok := st.(pinger); ok {
			be.ready = func(ctx context.Context) (string, error) { return "", p.Ping(ctx) }
		}
		return be, nil
	}
	switch a.cfg.Store {
	case "embedded":
		return a.newEmbedded()
	case "vault":
		return a.newVault(ctx)
	}
	return nil, fmt.Errorf("unknown store %q", a.cfg.Store)
}

func (a *App) newEmbedded() (*backend, error) {
	key, err := a.masterKey()
	if err != nil {
		return nil, err
	}
	st, err := filestore.Open(a.cfg.storeFile(), key, filestore.WithLogger(a.log),
		filestore.WithDeviceCache(a.cfg.StoreCacheSize))
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	a.onClose(st.Close)
	be := &backend{
		store:      a.metrics.InstrumentStore(st),
		issuerKeys: issuerkeys.Local(), // the file encrypts the ring's setting at rest
		backup:     st,
		ready:      func(ctx context.Context) (string, error) { return "", st.Ping(ctx) },
	}
	be.ca = devicecert.NewLocal(be.store, a.o.now) // the file encrypts the CA keys too
	return be, nil
}

func (a *App) masterKey() ([]byte, error) {
	if a.cfg.MasterKey != "" {
		k, err := filestore.ParseMasterKey(a.cfg.MasterKey)
		if err != nil {
			return nil, fmt.Errorf("TOKENSVC_MASTER_KEY: %w", err)
		}
		return k, nil
	}
	keyFile := a.cfg.masterKeyFile()
	if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
		// A new key cannot open an existing store: say what is missing instead of
		// writing a key beside it and failing as if the key were wrong.
		if _, err := os.Stat(a.cfg.storeFile()); err == nil {
			return nil, fmt.Errorf("master key file %s is missing but the store %s exists: restore the key file, or set TOKENSVC_MASTER_KEY", keyFile, a.cfg.storeFile())
		}
	}
	k, err := filestore.LoadOrCreateMasterKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return k, nil
}

func (a *App) newVault(ctx context.Context) (*backend, error) {
	client, err := vaultauth.NewClient(a.cfg.Vault)
	if err != nil {
		return nil, err
	}
	auth := vaultauth.New(client, a.cfg.Vault, a.log)
	// Log in once before serving: without it the service could not even check the admin
	// token. If Vault is down at start, exit and let the supervisor restart us.
	if _, err := auth.Login(ctx); err != nil {
		return nil, err
	}
	vs, err := vaultstore.New(client, a.cfg.VaultStore, vaultstore.WithLogger(a.log), vaultstore.WithClock(a.o.now), vaultstore.WithAuthState(auth.Ready))
	if err != nil {
		return nil, err
	}
	// Timed beneath the cache, so the latency is Vault's and hits do not dilute it.
	var st store.Store = a.metrics.InstrumentStore(vs)
	if a.cfg.Cache.Enabled {
		opts := a.cfg.Cache.Options
		opts.Now = a.o.now
		cs, err := cachestore.New(st, opts)
		if err != nil {
			_ = vs.Close()
			return nil, err
		}
		a.metrics.RegisterCache(cs)
		st = cs
	}
	// Closing the cache drops the keys it holds, then closes Vault's client.
	a.onClose(st.Close)
	return &backend{
		store:      st,
		transit:    vs,
		issuerKeys: issuerkeys.Transit(vs),           // private keys never leave Vault
		ca:         devicecert.NewVault(vs, a.o.now), // the PKI engine: the CA key never leaves Vault
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
