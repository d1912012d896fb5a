// Package redisreplay is the replay store replicas share: single-use values (device
// jtis, nonces) consumed in a server speaking the Redis protocol (Redis, Valkey) with
// one SET NX PX per value — one round trip — whose expiry is the value's remaining
// lifetime, so the server forgets each one as soon as it could no longer be accepted.
//
// It fails closed: when the server does not answer within the call deadline, Consume
// returns store.ErrUnavailable and the caller refuses. It never retries on the request
// path; go-redis's pool stops dialling a dead server after PoolSize failures and probes
// it once a second, so an outage costs no more than a refused request and recovery
// follows within about a second of the server's return.
package redisreplay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/store"
)

// PoolSize is the most connections one process keeps to the replay store.
const PoolSize = 128

// KeyPrefix starts every key this package writes, so the server can be shared.
const KeyPrefix = "tokensvc:replay:"

// Config is how to reach the replay store.
type Config struct {
	// URL is redis://[user@]host[:port][/db] or rediss:// for TLS. A password in the URL
	// is refused: URLs end up in process listings and logs.
	URL string
	// Password is the server's (or the ACL user's) password; empty for none.
	Password string
	// CAFile is a PEM file of the CA(s) that sign the server's certificate (rediss);
	// empty uses the system roots.
	CAFile string
	// Timeout is the deadline of each call, dial included.
	Timeout time.Duration
}

// Validate reports the first configuration error; it never quotes the URL, which may
// carry credentials.
func (c Config) Validate() error {
	_, err := c.parse()
	return err
}

func (c Config) parse() (*url.URL, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, errors.New("replay store URL does not parse")
	}
	switch {
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return nil, errors.New("replay store URL: want redis:// or rediss://")
	case u.Hostname() == "":
		return nil, errors.New("replay store URL: no host")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("replay store URL: no query or fragment; timeouts come from -vault-timeout")
	}
	if _, set := u.User.Password(); set {
		return nil, errors.New("replay store URL: carries a password; pass it in TOKENSVC_REPLAY_STORE_PASSWORD or -replay-store-password-file")
	}
	if db := u.Path; db != "" && db != "/" {
		if _, err := strconv.Atoi(db[1:]); err != nil {
			return nil, errors.New("replay store URL: the path must be a database number")
		}
	}
	if c.CAFile != "" && u.Scheme != "rediss" {
		return nil, errors.New("replay store CA file needs a rediss:// URL")
	}
	if c.Timeout <= 0 {
		return nil, errors.New("replay store timeout must be positive")
	}
	return u, nil
}

// Store consumes values in the shared server.
type Store struct {
	c   *redis.Client
	now func() time.Time
	// timeout bounds each call even when the caller's context has no deadline.
	timeout time.Duration
	// ev is the last verdict on the server's memory policy (eviction.go).
	ev evictionCheck
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock remaining lifetimes are measured with (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithLogger sends go-redis's own messages (failed dials, mostly) to log at warning
// level instead of its plain-text default on stderr. go-redis has one logger per
// process: the last Store given one sets it.
func WithLogger(log *slog.Logger) Option {
	return func(*Store) { redis.SetLogger(slogPrinter{log}) }
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	p.log.WarnContext(ctx, "replay store client", "detail", fmt.Sprintf(format, v...))
}

// New returns a Store for cfg. It does not connect: the first Consume or Ping does.
func New(cfg Config, opts ...Option) (*Store, error) {
	u, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	o := &redis.Options{
		Addr:     net.JoinHostPort(u.Hostname(), portOr(u.Port(), "6379")),
		Username: u.User.Username(),
		Password: cfg.Password,
		// One attempt per call: a retry would be a second round trip on the request
		// path, and the caller answers 503 + Retry-After instead.
		MaxRetries: -1,
		// go-redis's default (10 per CPU) makes a boot storm's token requests queue for
		// a connection past the deadline; the server keeps thousands open cheaply, and
		// more writers share each append-only-file fsync.
		PoolSize:              PoolSize,
		DialerRetries:         1,
		DialTimeout:           cfg.Timeout,
		ReadTimeout:           cfg.Timeout,
		WriteTimeout:          cfg.Timeout,
		PoolTimeout:           cfg.Timeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		// Managed-service maintenance notifications need RESP3 push support
		// servers of every kind do not give; the pool reconnects on its own.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if db := u.Path; db != "" && db != "/" {
		o.DB, _ = strconv.Atoi(db[1:])
	}
	if u.Scheme == "rediss" {
		t := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			if t.RootCAs, err = tlsconf.LoadPool(cfg.CAFile); err != nil {
				return nil, fmt.Errorf("replay store CA: %w", err)
			}
		}
		o.TLSConfig = t
	}
	s := &Store{c: redis.NewClient(o), now: time.Now, timeout: cfg.Timeout}
	for _, opt := range opts {
		opt(s)
	}
	return s, nil
}

func portOr(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// Consume records id as used until expiry with SET NX PX (one round trip; once a
// minute one more reads the server's memory policy, see eviction.go) and reports
// whether it was fresh. It returns store.ErrUnavailable (wrapped) when the server does
// not answer within the timeout or answers with an error, or may evict keys
// (ErrEvicting).
func (s *Store) Consume(ctx context.Context, id string, expiry time.Time) (bool, error) {
	ttl := expiry.Sub(s.now())
	// PX counts whole milliseconds: round up, so the key never dies before the value
	// could no longer be accepted. An expiry already past still gets a key (a value
	// judged at the edge of its lifetime is used once).
	ttl = max((ttl + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.evicting(ctx); err != nil {
		return false, fmt.Errorf("consume in the replay store: %w", err)
	}
	fresh, err := s.c.SetNX(ctx, KeyPrefix+id, "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("consume in the replay store: %w: %v", store.ErrUnavailable, err)
	}
	return fresh, nil
}

// Ping checks that the server answers and will not evict keys, for readiness.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("replay store: %w: %v", store.ErrUnavailable, err)
	}
	if err := s.evicting(ctx); err != nil {
		return fmt.Errorf("replay store: %w", err)
	}
	return nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.c.Close() }
