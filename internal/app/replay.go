package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/replay/redisreplay"
)

var (
	_ deviceauth.ReplayStore = (*redisreplay.Store)(nil)
	_ limits.SharedBuckets   = (*redisreplay.Store)(nil)
)

// ReplayConfig is the replay store the replicas share (Redis or Valkey); while URL is
// empty each process remembers used jtis and nonces in its own memory.
type ReplayConfig struct {
	// URL is redis://[user@]host[:port][/db] or rediss://…, never with a password.
	URL string
	// Password is the server's password (environment only); PasswordFile a file holding
	// it (trailing newline dropped). At most one of them.
	Password     string
	PasswordFile string
	// CAFile is a PEM file of the CA(s) of the server's certificate (rediss).
	CAFile string
	// DeviceLimits keeps the per-device rate-limit buckets in the replay store too, so
	// a device's budget is the same on every replica (a second round trip per token).
	DeviceLimits bool
}

// validate checks the replay store's settings; timeout is the per-call deadline.
func (r ReplayConfig) validate(c Config) error {
	if r.URL == "" {
		if r.Password != "" || r.PasswordFile != "" || r.CAFile != "" || r.DeviceLimits {
			return errors.New("replay store password, CA and device limits need TOKENSVC_REPLAY_STORE")
		}
		return nil
	}
	if r.Password != "" && r.PasswordFile != "" {
		return errors.New("set TOKENSVC_REPLAY_STORE_PASSWORD or -replay-store-password-file, not both")
	}
	return redisreplay.Config{URL: r.URL, CAFile: r.CAFile, Timeout: c.replayTimeout()}.Validate()
}

// replayTimeout is each replay store call's deadline: the Vault call deadline, so a
// token request waits on the replay store no longer than on Vault.
func (c Config) replayTimeout() time.Duration { return c.VaultStore.RequestTimeout }

// newReplay opens the shared replay store when one is configured and returns the
// verifier option that uses it; nil when there is none. Its health joins readiness;
// with DeviceLimits it also holds the per-device rate-limit buckets.
func (a *App) newReplay() ([]deviceauth.Option, error) {
	r := a.cfg.Replay
	if r.URL == "" {
		return nil, nil
	}
	pw := r.Password
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("replay store password file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	rs, err := redisreplay.New(redisreplay.Config{URL: r.URL, Password: pw, CAFile: r.CAFile, Timeout: a.cfg.replayTimeout()},
		redisreplay.WithClock(a.o.now), redisreplay.WithLogger(a.log))
	if err != nil {
		return nil, err
	}
	a.onClose(rs.Close)
	a.replayPing = rs.Ping
	if r.DeviceLimits {
		a.limitOpts = append(a.limitOpts,
			limits.WithSharedBuckets(rs, a.cfg.replayTimeout()),
			limits.WithSharedErrors(func(err error) {
				a.log.Warn("shared device limits unavailable; this replica's own bucket applies", "error", err.Error())
			}))
	}
	return []deviceauth.Option{deviceauth.WithReplayStore(rs)}, nil
}

// readiness adds the shared replay store to the store's readiness. Like Vault trouble,
// an unreachable replay store degrades readiness rather than failing it: every replica
// shares it, and pulling them all out of their Service would turn the devices' fast 503
// + Retry-After into connection errors and take the operator API down with them.
func (a *App) readiness(store func(ctx context.Context) (string, error)) func(ctx context.Context) (string, error) {
	if a.replayPing == nil {
		return store
	}
	return func(ctx context.Context) (string, error) {
		note, err := store(ctx)
		if err != nil {
			return note, err
		}
		if err := a.replayPing(ctx); err != nil {
			replayNote := "replay store unreachable; refusing device tokens"
			if errors.Is(err, redisreplay.ErrEvicting) {
				replayNote = "replay store may evict keys (set maxmemory-policy noeviction); refusing device tokens"
			}
			if note != "" {
				return note + "; " + replayNote, nil
			}
			return replayNote, nil
		}
		return note, nil
	}
}
