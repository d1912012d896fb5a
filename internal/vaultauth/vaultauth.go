// Package vaultauth builds the Vault client tokensvc uses and keeps it logged in: token,
// AppRole or Kubernetes auth, token renewal with vault/api's LifetimeWatcher, and a fresh
// login whenever renewal ends (max TTL reached, token revoked, Vault restarted).
package vaultauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Method is a Vault auth method.
type Method string

// Auth methods.
const (
	MethodToken      Method = "token"
	MethodAppRole    Method = "approle"
	MethodKubernetes Method = "kubernetes"
)

// DefaultKubernetesTokenFile is where Kubernetes mounts the service-account JWT.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Config is how to reach and log in to Vault.
type Config struct {
	Address   string
	CACert    string // PEM file; empty uses the system roots
	Namespace string
	Method    Method
	// Mount is the auth method's mount path; default the method name.
	Mount string
	// Token is used by MethodToken.
	Token string
	// RoleID and SecretID (or SecretIDFile) are used by MethodAppRole.
	RoleID       string
	SecretID     string
	SecretIDFile string
	// Role and TokenFile are used by MethodKubernetes.
	Role      string
	TokenFile string
	// HTTPTimeout bounds any single HTTP exchange; request paths set shorter deadlines.
	HTTPTimeout time.Duration
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	if c.Address == "" {
		return errors.New("vault address (VAULT_ADDR) must be set")
	}
	switch c.Method {
	case MethodToken:
		if c.Token == "" {
			return errors.New("vault auth token needs VAULT_TOKEN")
		}
	case MethodAppRole:
		if c.RoleID == "" || (c.SecretID == "" && c.SecretIDFile == "") {
			return errors.New("vault auth approle needs a role ID and a secret ID (or secret ID file)")
		}
	case MethodKubernetes:
		if c.Role == "" {
			return errors.New("vault auth kubernetes needs a role")
		}
	default:
		return fmt.Errorf("vault auth method %q: want token, approle or kubernetes", c.Method)
	}
	return nil
}

// NewClient returns a Vault client for c with client-side retries off: tokensvc decides
// itself when to retry, and a retrying client would stall device requests for seconds.
func NewClient(c Config) (*vault.Client, error) {
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault config: %w", cfg.Error)
	}
	cfg.Address = c.Address
	cfg.MaxRetries = 0
	// The bound on one exchange is the http.Client's own, not vault/api's Timeout: for
	// raw writes (Transit hmac) vault/api cancels its timeout context as soon as the
	// response headers are in, before the caller reads the body, and a canceled request
	// closes its connection, so every Transit signature paid for a new TCP connection.
	cfg.Timeout = 0
	cfg.HttpClient.Timeout = c.HTTPTimeout
	if cfg.HttpClient.Timeout == 0 {
		cfg.HttpClient.Timeout = 10 * time.Second
	}
	if c.CACert != "" {
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: c.CACert}); err != nil {
			return nil, fmt.Errorf("vault CA %s: %w", c.CACert, err)
		}
	}
	// Many concurrent device requests share this client; keep connections around.
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 64
	}
	client, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// Set after vault.NewClient, which configures the *http.Transport itself.
	cfg.HttpClient.Transport = keepIdle{cfg.HttpClient.Transport}
	client.ClearToken() // never pick up a token from the environment behind our back
	if c.Namespace != "" {
		client.SetNamespace(c.Namespace)
	}
	return client, nil
}

// keepIdle is the Vault client's transport without its CloseIdleConnections:
// vault/api's retrying layer (go-retryablehttp) calls that on the shared client
// whenever one request fails for good — a device request past its deadline, a caller
// gone — so one failure would make every other caller dial Vault again, and fail a
// request that was just taking one of the closed connections. Idle connections still
// close after the transport's IdleConnTimeout.
type keepIdle struct{ rt http.RoundTripper }

func (k keepIdle) RoundTrip(r *http.Request) (*http.Response, error) { return k.rt.RoundTrip(r) }

// Authenticator logs the client in and keeps its token alive.
type Authenticator struct {
	client *vault.Client
	cfg    Config
	log    *slog.Logger

	mu      sync.Mutex
	lastErr error
	logins  int
	renewed int
}

// New returns an Authenticator for client; log defaults to slog.Default().
func New(client *vault.Client, cfg Config, log *slog.Logger) *Authenticator {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Mount == "" {
		cfg.Mount = string(cfg.Method)
	}
	if cfg.Method == MethodKubernetes && cfg.TokenFile == "" {
		cfg.TokenFile = DefaultKubernetesTokenFile
	}
	return &Authenticator{client: client, cfg: cfg, log: log, lastErr: errors.New("not logged in yet")}
}

// Login authenticates once and sets the client's token. It returns the auth secret,
// whose lease the caller may watch.
func (a *Authenticator) Login(ctx context.Context) (*vault.Secret, error) {
	var (
		secret *vault.Secret
		err    error
	)
	switch a.cfg.Method {
	case MethodToken:
		a.client.SetToken(a.cfg.Token)
		secret, err = a.client.Auth().Token().LookupSelfWithContext(ctx)
		if err == nil {
			secret, err = tokenSecret(secret)
		}
	case MethodAppRole:
		secretID := a.cfg.SecretID
		if secretID == "" {
			secretID, err = readSecretFile(a.cfg.SecretIDFile)
			if err != nil {
				break
			}
		}
		secret, err = a.login(ctx, map[string]any{"role_id": a.cfg.RoleID, "secret_id": secretID})
	case MethodKubernetes:
		var jwt string
		if jwt, err = readSecretFile(a.cfg.TokenFile); err == nil {
			secret, err = a.login(ctx, map[string]any{"role": a.cfg.Role, "jwt": jwt})
		}
	default:
		err = fmt.Errorf("unknown auth method %q", a.cfg.Method)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.lastErr = fmt.Errorf("vault login (%s): %w", a.cfg.Method, err)
		return nil, a.lastErr
	}
	a.lastErr = nil
	a.logins++
	return secret, nil
}

func (a *Authenticator) login(ctx context.Context, body map[string]any) (*vault.Secret, error) {
	// A login must not carry a stale token: Vault would reject the request with it. It
	// goes through a copy of the client (same connections and headers, the namespace
	// among them, no token): clearing the shared client's token instead would send every
	// store call made during the login, or after a failed one, without a token, and Vault
	// answers those 403 — device requests failing with 500 at every re-login, and for as
	// long as a login fails. The old token stays in use until the new one arrives.
	c, err := a.client.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("clone vault client: %w", err)
	}
	c.ClearToken()
	secret, err := c.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(a.cfg.Mount, "/")+"/login", body)
	if err != nil {
		return nil, err
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, errors.New("login returned no token")
	}
	a.client.SetToken(secret.Auth.ClientToken)
	return secret, nil
}

// tokenSecret turns a token lookup into a Secret the LifetimeWatcher can renew.
func tokenSecret(lookup *vault.Secret) (*vault.Secret, error) {
	if lookup == nil || lookup.Data == nil {
		return nil, errors.New("token lookup returned nothing")
	}
	renewable, _ := lookup.TokenIsRenewable()
	ttl, _ := lookup.TokenTTL()
	id, _ := lookup.TokenID()
	if ttl <= 0 && lookup.Data["expire_time"] != nil {
		// Vault reports whole seconds: a token in its last second reads TTL 0, which
		// must not be taken for a token that never expires (those have no expire_time).
		return nil, errors.New("token expires now")
	}
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: id, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}, nil
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// maxLoginBackoff caps the wait between failed logins. When Vault comes back from an
// outage the token did not outlive, nothing reads Vault until the next login succeeds,
// so this bounds the recovery: with the key cache's probe (at most 5 s) it stays
// within the 30 s the design allows (DESIGN §6), where a one-minute cap could take a
// minute. One login per replica every 10 s is no load for Vault.
const maxLoginBackoff = 10 * time.Second

// Run logs in and keeps the token alive until ctx ends: it renews the token while Vault
// allows, logs in again when renewal ends, and retries failed logins with capped,
// jittered backoff. It returns only when ctx is done.
func (a *Authenticator) Run(ctx context.Context) error {
	backoff := time.Second
	renewalEnded := false // the token method's one token can no longer be renewed
	for {
		secret, err := a.Login(ctx)
		if err != nil {
			a.log.Warn("vault login failed", "method", a.cfg.Method, "error", err.Error(), "retryIn", backoff.String())
			if !sleep(ctx, jitter(backoff)) {
				return nil
			}
			backoff = min(2*backoff, maxLoginBackoff)
			continue
		}
		backoff = time.Second
		a.log.Info("vault login", "method", a.cfg.Method, "renewable", secret.Auth.Renewable, "ttl", (time.Duration(secret.Auth.LeaseDuration) * time.Second).String())
		if secret.Auth.LeaseDuration == 0 {
			// A token that never expires (e.g. a root token) needs no care.
			<-ctx.Done()
			return nil
		}
		lease := time.Duration(secret.Auth.LeaseDuration) * time.Second
		if a.cfg.Method == MethodToken && (renewalEnded || !secret.Auth.Renewable) {
			// The configured token is the only one this method has: wait for it to
			// expire, after which Login fails and reports the service unready. Looking
			// it up again at a fraction of its shrinking TTL would hammer Vault in the
			// token's last seconds and gain nothing.
			if !sleep(ctx, lease+time.Second) {
				return nil
			}
			continue
		}
		if !secret.Auth.Renewable {
			// Nothing to renew: log in again shortly before it expires.
			if !sleep(ctx, max(lease*4/5, time.Second)) {
				return nil
			}
			continue
		}
		err = a.watch(ctx, secret)
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("vault token renewal ended", "method", a.cfg.Method, "error", err.Error())
		// Only the maximum TTL ends renewal for good; after a failed renewal (Vault
		// unreachable, sealed) the token method looks its token up and renews it again.
		renewalEnded = a.cfg.Method == MethodToken && errors.Is(err, errMaxTTL)
	}
}

// errMaxTTL ends a watch whose token can be renewed no further.
var errMaxTTL = errors.New("token reached its maximum TTL")

// watch renews secret's token until renewal is no longer possible or ctx ends.
func (a *Authenticator) watch(ctx context.Context, secret *vault.Secret) error {
	w, err := a.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		return err
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.DoneCh():
			if err == nil {
				err = errMaxTTL
			}
			return err
		case <-w.RenewCh():
			a.mu.Lock()
			a.renewed++
			a.mu.Unlock()
		}
	}
}

// Ready reports the last login's error, nil when logged in.
func (a *Authenticator) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// Counts reports how many logins and renewals have happened, for tests and metrics.
func (a *Authenticator) Counts() (logins, renewals int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.logins, a.renewed
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
