// Package issuerkeys is the service's issuer key ring: the RS256 and ES256 keys that
// sign the JWTs (and AWS authorizer signatures) tokensvc issues for JWT-authenticated
// brokers, their publication schedule, and their self-signed certificates.
//
// # Schedule
//
// A key rotated in (Rotate) is published at once and signs only from SignsFrom =
// creation + Config.Lead, which exceeds the JWKS max-age (300 s) plus the ring's
// refresh interval, so every replica and every cache of the key set has the key
// before a credential it signed is shown to a broker. When it starts signing, the key
// it replaces is retired (RetiredAt = that instant) and stays published until
// PublishedUntil = RetiredAt + the longest credential lifetime it may have signed
// (the larger of Config.MaxLifetime and every hub's maxTtlSeconds at rotation time)
// + SkewMargin: rotation never makes a valid credential unverifiable. The hubs are
// read when Rotate runs; a hub created (or given a longer maxTtlSeconds) during the
// lead that follows, while the old key still signs, is not covered unless its lifetime
// is within Config.MaxLifetime — keep MaxLifetime at least the longest hub lifetime
// you allow, or rotate after such a change.
//
// The first key of an algorithm is created when Run starts (with an issuer URL), on
// first use, or by Rotate, and signs at once: with no key of that algorithm there is
// no credential to protect. A verifier may still hold a key set fetched before the key
// existed; it meets an unknown kid until it fetches the set again (keyfunc and the
// AWS authorizer refetch on an unknown kid, EMQX on its refresh interval) — which is
// why Run creates the keys at start, before devices ask.
//
// # Persistence and replicas
//
// The ring is one store setting (SettingName): metadata, public keys, certificates
// and, with the Local backend only, PKCS#8 private keys (the embedded store encrypts
// it at rest; with Vault, Transit keeps the private keys). Settings have no
// check-and-set, so writes are optimistic: read, merge by kid (never dropping a key
// another replica added), write, read back and retry if the write was lost. The limit:
// two replicas writing within one read-back of each other can still lose one write;
// the loser's key is then missing from the stored ring, and the loser may already have
// signed with it. So every reload (each Config.Refresh) and every write first writes
// back the keys held in memory, still published, that the store lacks: a key that
// signed is never dropped from the key set while credentials it signed may be valid.
// Until then the other replicas do not publish it (a verifier that refetches on an
// unknown kid may meet it at most for one reload interval). For the first key, the
// read-back makes a replica adopt the key that won rather than sign with its own (a
// losing Transit key stays in Vault, unused). Rotate is an operator action; run it
// once, on one replica.
//
// Reads are served from memory: the ring is loaded on first use, reloaded by Run
// every Config.Refresh and on an unknown kid, so neither JWKS serving nor signing reads
// the store per request.
package issuerkeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// SettingName is the store setting that holds the ring.
const SettingName = "issuer-keys"

// Schedule defaults and bounds.
const (
	// JWKSMaxAge is how long the published key set may be cached (the Cache-Control
	// max-age internal/httpapi serves it with).
	JWKSMaxAge = 300 * time.Second
	// DefaultRefresh is how often Run reloads the ring from the store.
	DefaultRefresh = 30 * time.Second
	// MinLead is the shortest publication lead: a new key must outlive every cache of
	// the key set and every replica's reload before it signs.
	MinLead = JWKSMaxAge + DefaultRefresh
	// DefaultLead is the publication lead by default.
	DefaultLead = 10 * time.Minute
	// SkewMargin is added to a retired key's publication, for verifiers whose clocks
	// run behind and who accept a few minutes of expiry leeway.
	SkewMargin = 5 * time.Minute
	// pruneAfter is how long an expired key stays listed (not published) before a
	// write drops it from the ring.
	pruneAfter = 30 * 24 * time.Hour
	// writeAttempts bounds the optimistic write retries.
	writeAttempts = 4
)

// ErrNoIssuer means the service has no issuer URL configured, so it cannot sign JWTs.
var ErrNoIssuer = errors.New("no issuer URL configured: set TOKENSVC_ISSUER_URL to sign JWT credentials")

// Settings is where the ring persists; store.Store implements it.
type Settings interface {
	// GetSetting returns a setting; store.ErrNotFound if unset.
	GetSetting(ctx context.Context, name string) ([]byte, error)
	// PutSetting stores a setting.
	PutSetting(ctx context.Context, name string, value []byte) error
}

// HubLister lists hubs, to bound the lifetime of credentials a retired key signed.
type HubLister interface {
	// ListHubs returns every hub.
	ListHubs(ctx context.Context) ([]domain.Hub, error)
}

// Config is the ring's configuration.
type Config struct {
	// Issuer is the iss of every JWT the ring signs; empty makes SignJWT fail with
	// ErrNoIssuer.
	Issuer string
	// Lead is how long a rotated-in key is published before it signs (default
	// DefaultLead, at least MinLead).
	Lead time.Duration
	// MaxLifetime bounds the lifetime of any credential a key signs (default
	// domain.DefaultMax); hubs allowing longer raise it.
	MaxLifetime time.Duration
	// Refresh is how often Run reloads the ring (default DefaultRefresh).
	Refresh time.Duration
}

// Option changes how New builds the ring.
type Option func(*Ring)

// WithClock sets the ring's clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(r *Ring) { r.now = now } }

// WithLogger sets the ring's log (default slog.Default()). Key material is never logged.
func WithLogger(l *slog.Logger) Option { return func(r *Ring) { r.log = l } }

// WithHubs lets Rotate raise MaxLifetime to the longest hub maxTtlSeconds.
func WithHubs(h HubLister) Option { return func(r *Ring) { r.hubs = h } }

// Ring is the issuer key ring: a target.IssuerSigner and httpapi.IssuerKeys. It is
// safe for concurrent use.
type Ring struct {
	st   Settings
	be   Backend
	cfg  Config
	now  func() time.Time
	log  *slog.Logger
	hubs HubLister

	snap atomic.Pointer[snapshot]
	// mu serialises loads and writes.
	mu sync.Mutex
}

// New returns a ring persisted in st under SettingName, its private keys held by be.
// It does not read the store; the first use does.
func New(st Settings, be Backend, cfg Config, opts ...Option) (*Ring, error) {
	if cfg.Lead == 0 {
		cfg.Lead = DefaultLead
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = domain.DefaultMax
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	switch {
	case st == nil || be == nil:
		return nil, errors.New("issuer keys: nil store or backend")
	case cfg.Refresh < 0 || cfg.MaxLifetime < 0:
		return nil, errors.New("issuer keys: refresh and max lifetime must be positive")
	case cfg.Lead < JWKSMaxAge+cfg.Refresh:
		return nil, fmt.Errorf("issuer keys: publication lead %v must be at least the key set's max-age %v plus the reload interval %v", cfg.Lead, JWKSMaxAge, cfg.Refresh)
	}
	r := &Ring{st: st, be: be, cfg: cfg, now: time.Now, log: slog.Default()}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Issuer returns the iss the ring's JWTs carry.
func (r *Ring) Issuer() string { return r.cfg.Issuer }

// Keys returns every key the ring holds, newest first, and the ring's clock reading.
// It returns store.ErrUnavailable (wrapped) when the ring was never loaded and the
// store cannot be reached.
func (r *Ring) Keys(ctx context.Context) ([]domain.IssuerKey, time.Time, error) {
	s, err := r.current(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]domain.IssuerKey, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.meta
	}
	return out, r.now(), nil
}

// SignJWT signs claims with the key that signs for alg now, creating the first key of
// alg if there is none. It returns ErrNoIssuer without an issuer URL, an error
// wrapping domain.ErrInvalid for an algorithm other than RS256 and ES256, and
// store.ErrUnavailable (wrapped) when Vault Transit cannot sign.
func (r *Ring) SignJWT(ctx context.Context, alg string, claims any) (token, kid string, err error) {
	if r.cfg.Issuer == "" {
		return "", "", ErrNoIssuer
	}
	a, err := checkAlg(alg)
	if err != nil {
		return "", "", err
	}
	s, err := r.current(ctx)
	if err != nil {
		return "", "", err
	}
	k := s.signing(a, r.now())
	if k == nil {
		if k, err = r.first(ctx, a); err != nil {
			return "", "", err
		}
	}
	payload, err := json.Marshal(claims)
	if err != nil || len(payload) == 0 || payload[0] != '{' {
		return "", "", fmt.Errorf("sign JWT: claims must marshal to a JSON object (%v)", err)
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(k.header)+enc.EncodedLen(len(payload))+1+enc.EncodedLen(256))
	buf = append(buf, k.header...)
	buf = enc.AppendEncode(buf, payload)
	sig, err := r.signDigest(ctx, k, buf)
	if err != nil {
		return "", "", err
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), k.meta.ID, nil
}

// SignPKCS1 returns the RSA PKCS#1 v1.5 SHA-256 signature of msg by RSA key kid,
// which must be published. Errors: store.ErrNotFound (wrapped) for an unknown kid,
// store.ErrUnavailable when Vault Transit cannot sign.
func (r *Ring) SignPKCS1(ctx context.Context, kid string, msg []byte) ([]byte, error) {
	s, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	k := s.byID(kid)
	if k == nil { // another replica's new key: reload once
		if s, err = r.reload(ctx); err != nil {
			return nil, err
		}
		if k = s.byID(kid); k == nil {
			return nil, fmt.Errorf("issuer key %q: %w", kid, store.ErrNotFound)
		}
	}
	if k.meta.Alg != domain.AlgRS256 {
		return nil, fmt.Errorf("issuer key %q is %s, not an RSA key", kid, k.meta.Alg)
	}
	if now := r.now(); !k.meta.Published(now) || k.meta.State(now) == domain.KeyPending {
		return nil, fmt.Errorf("issuer key %q does not sign at %v", kid, now)
	}
	return r.signDigest(ctx, k, msg)
}

func (r *Ring) signDigest(ctx context.Context, k *key, msg []byte) ([]byte, error) {
	if k.signer == nil {
		return nil, fmt.Errorf("issuer key %q has no signer in this service (its private key is held by another backend)", k.meta.ID)
	}
	d := sha256.Sum256(msg)
	sig, err := k.signer.SignDigest(ctx, d[:])
	if err != nil {
		return nil, fmt.Errorf("sign with issuer key %q: %w", k.meta.ID, err)
	}
	return sig, nil
}

// Rotate creates the next key of alg. It publishes at once and signs from now + Lead
// (at once if alg has no key yet); the keys of alg it replaces retire then. Errors
// wrap domain.ErrInvalid for a bad algorithm, store.ErrUnavailable when the store or
// Vault cannot be reached.
func (r *Ring) Rotate(ctx context.Context, alg domain.IssuerAlg) (domain.IssuerKey, error) {
	a, err := checkAlg(string(alg))
	if err != nil {
		return domain.IssuerKey{}, err
	}
	lifetime, err := r.lifetime(ctx)
	if err != nil {
		return domain.IssuerKey{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A fresh read, not the ring in memory: whether alg has a key decides whether the
	// new one may sign at once, and another replica may have made one since the last
	// reload.
	s, err := r.reloadLocked(ctx)
	if err != nil {
		return domain.IssuerKey{}, err
	}
	now := r.now()
	signsFrom := now.Add(r.cfg.Lead)
	if !s.live(a, now) {
		signsFrom = now // nothing to replace: see the package documentation
	}
	nk, err := r.create(ctx, a, now, signsFrom)
	if err != nil {
		return domain.IssuerKey{}, err
	}
	until := signsFrom.Add(lifetime + SkewMargin)
	apply := func(cur []storedKey) []storedKey {
		next := make([]storedKey, 0, len(cur)+1)
		for _, k := range cur {
			if k.Alg == string(a) && k.RetiredAt == nil {
				k.RetiredAt, k.PublishedUntil = &signsFrom, &until
			}
			next = append(next, k)
		}
		return append(next, nk)
	}
	done := func(back []storedKey) bool { return hasKey(back, nk.ID) }
	s, err = r.write(ctx, apply, done)
	if err != nil {
		return domain.IssuerKey{}, err
	}
	r.log.InfoContext(ctx, "issuer key rotated in", "kid", nk.ID, "alg", a, "signsFrom", signsFrom, "transit", nk.Transit)
	return s.byID(nk.ID).meta, nil
}

// first creates the first key of alg, signing at once, unless a load finds one (made
// by another replica or call meanwhile).
func (r *Ring) first(ctx context.Context, a domain.IssuerAlg) (*key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.loadLocked(ctx)
	if err != nil {
		return nil, err
	}
	now := r.now()
	if k := s.signing(a, now); k != nil {
		return k, nil
	}
	nk, err := r.create(ctx, a, now, now)
	if err != nil {
		return nil, err
	}
	apply := func(cur []storedKey) []storedKey {
		if activeIn(cur, a, now) {
			return nil // another replica's key won: adopt it
		}
		return append(cur, nk)
	}
	done := func(back []storedKey) bool { return hasKey(back, nk.ID) || activeIn(back, a, now) }
	if s, err = r.write(ctx, apply, done); err != nil {
		return nil, err
	}
	k := s.signing(a, r.now())
	if k == nil {
		return nil, fmt.Errorf("issuer keys: no %s key signs after creating one", a)
	}
	if k.meta.ID == nk.ID {
		r.log.InfoContext(ctx, "first issuer key created", "kid", nk.ID, "alg", a, "transit", nk.Transit)
	}
	return k, nil
}

// create makes a key pair through the backend and its certificate.
func (r *Ring) create(ctx context.Context, a domain.IssuerAlg, now, signsFrom time.Time) (storedKey, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	kid := strings.ToLower(string(a)) + "-" + hex.EncodeToString(rnd[:])
	pub, priv, err := r.be.Create(ctx, kid, a)
	if err != nil {
		return storedKey{}, fmt.Errorf("create %s issuer key: %w", a, err)
	}
	ds, err := r.be.Signer(kid, a, pub, priv)
	if err != nil {
		return storedKey{}, err
	}
	cert, err := selfSign(ctx, r.cfg.Issuer, kid, pub, ds, now)
	if err != nil {
		return storedKey{}, err
	}
	pubDER, err := marshalPublic(pub)
	if err != nil {
		return storedKey{}, fmt.Errorf("issuer key %q: %w", kid, err)
	}
	return storedKey{
		ID: kid, Alg: string(a), CreatedAt: now, SignsFrom: signsFrom,
		Public: pubDER, Certificate: cert, Transit: r.be.Transit(), Private: priv,
	}, nil
}

// lifetime is the longest credential lifetime a key may have signed.
func (r *Ring) lifetime(ctx context.Context) (time.Duration, error) {
	l := r.cfg.MaxLifetime
	if r.hubs == nil {
		return l, nil
	}
	hs, err := r.hubs.ListHubs(ctx)
	if err != nil {
		return 0, fmt.Errorf("issuer keys: list hubs for the longest token lifetime: %w", err)
	}
	for _, h := range hs {
		l = max(l, h.MaxTTL)
	}
	return l, nil
}

func checkAlg(alg string) (domain.IssuerAlg, error) {
	switch a := domain.IssuerAlg(alg); a {
	case domain.AlgRS256, domain.AlgES256:
		return a, nil
	}
	return "", domain.Invalid("alg %q: want RS256 or ES256", alg)
}

func hasKey(ks []storedKey, kid string) bool {
	for _, k := range ks {
		if k.ID == kid {
			return true
		}
	}
	return false
}

func activeIn(ks []storedKey, a domain.IssuerAlg, now time.Time) bool {
	for _, k := range ks {
		if k.Alg == string(a) && !now.Before(k.SignsFrom) && (k.RetiredAt == nil || now.Before(*k.RetiredAt)) {
			return true
		}
	}
	return false
}
