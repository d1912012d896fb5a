// Package vaultstore is the HashiCorp Vault store.Store: hubs, devices and settings are
// JSON records in a KV v2 mount, and hubs marked Transit keep their SAS keys in Vault
// Transit, where HMACs are computed without the key ever leaving Vault.
//
// # Client
//
// The caller builds the *vault.Client (address, TLS, auth, token renewal) and must
// configure it with MaxRetries = 0. The store bounds every Vault call with its own
// timeout (Config.RequestTimeout on the request path, Config.WriteTimeout for
// provisioning writes, Transit imports and the reads operator operations make — so one
// slow read under load does not fail a whole listing page or import —, Config.ListTimeout for the LISTs of operator
// listings, which grow with the fleet) so a hung or sealed Vault turns into
// store.ErrUnavailable quickly; client-side retries would multiply that bound (the
// client's default of two retries with backoff stalls a request for seconds) and
// belong to the caller, who knows whether retrying is worth it.
//
// # Vault policy
//
// deploy/vault/tokensvc.hcl is the least-privilege policy for the defaults (KV v2 at
// secret/, Transit at transit/, prefix tokensvc); TestLeastPrivilegePolicy runs every
// operation under exactly that file.
//
// # KV v2 layout
//
// Under {Mount}/data/{Prefix}/, every name is stored as lowercase hex of its bytes,
// which is reversible, path-safe for any device ID character, case-preserving and
// order-preserving (Vault LIST results are sorted here, and hex sorts like the bytes):
//
//	hubs/{hex(name)}                    hub record (no key material when Transit)
//	devices/{hex(id)}                   device record (no key material when its keys are in Transit)
//	hubdevices/{hex(hub)}/{hex(id)}     marker: the device uses the hub (DeleteHub answers ErrConflict without scanning devices)
//	hubdevices/{hex(hub)}/g{32 hex}     group marker: the devices of one batch of concurrent creates use the hub (groups.go)
//	settings/{hex(name)}                named service setting
//	claims/{hubs|devices}/{hex(name)}   short-lived lock while Transit keys of that hub or device are imported or deleted
//
// Records are JSON with explicit field names (see records.go), so renaming a Go field
// cannot change the stored format. Deletes remove the metadata (DELETE
// {Mount}/metadata/...), so a deleted record leaves no old versions behind; an update
// that replaces key material destroys the version it superseded.
//
// # Write order
//
// Vault has no multi-key transactions, so every change is ordered so that a crash at
// any point leaves at worst an orphan marker, claim or Transit key — all harmless and
// reclaimed later — and never a device record that points at a hub or Transit key that
// does not exist:
//
//   - CreateDevice: Transit keys (if any) → marker (its own, or a group marker shared
//     with concurrent creates on the hub) → device record (check-and-set 0), then the
//     hub is read again and the device rolled back if the hub is being deleted.
//   - DeleteDevice: device record → marker (or its name in its group) → Transit keys.
//   - CreateHub: Transit key (if any) → hub record (check-and-set 0).
//   - DeleteHub: mark the hub record as deleting (so no CreateDevice can slip in) →
//     check the markers against the device records → hub record → markers → Transit key.
//
// Store.Check walks every record and reports what this order says can never be there
// (problems) and what it allows a crash to leave (leftovers).
//
// Transit key names are deterministic (see transit.go), so two concurrent creates or a
// create racing a delete of the same device or hub could otherwise import over or
// delete each other's keys; the claim records serialise exactly those operations
// across all replicas. A claim left by a crashed replica expires after two minutes.
package vaultstore

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"
	"golang.org/x/sync/singleflight"

	"github.com/tokensvc/tokensvc/internal/store"
)

// Errors returned (wrapped) by the Store methods, besides the store sentinels.
var (
	// ErrPermissionDenied means Vault refused the store's token (HTTP 403): the policy
	// attached to the token lacks a path the store needs, or the token expired. It is a
	// misconfiguration, not an outage, so it deliberately does not wrap
	// store.ErrUnavailable: retrying will not help.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrKeysInTransit means an update would change key material, the module list or the
	// hub of a device whose keys live in Vault Transit; those keys are imported at
	// creation and this store does not re-import them on update.
	ErrKeysInTransit = errors.New("device keys are held in Vault Transit")
	// ErrClosed means the Store has been closed.
	ErrClosed = errors.New("vaultstore: store is closed")
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMount          = "secret"
	DefaultPrefix         = "tokensvc"
	DefaultTransitMount   = "transit"
	DefaultRequestTimeout = 250 * time.Millisecond
	DefaultWriteTimeout   = 5 * time.Second
	DefaultListTimeout    = 5 * time.Second
	// DefaultPageSize is the page size ListDevices uses when asked for limit <= 0.
	DefaultPageSize = 100
)

const (
	// listConcurrency bounds the record reads ListDevices and ListHubs run at once: enough
	// to hide round trips, few enough not to flood Vault from an operator listing.
	listConcurrency = 8
	// updateAttempts bounds UpdateDevice's check-and-set retries. Each round lets at
	// least one of the racing writers through, so this covers that many concurrent
	// writers on one device.
	updateAttempts = 32
	// claimTTL is how long a claim (or a hub's deleting mark) holds before another
	// replica may treat it as left by a crash. The holder stops working at half of it,
	// so clock skew between replicas up to claimTTL/2 is tolerated.
	claimTTL = 2 * time.Minute
)

// Config says where in Vault the store keeps its data and how long it waits for Vault.
type Config struct {
	// Mount is the KV v2 mount path (default "secret").
	Mount string
	// Prefix is the folder under the mount holding all records (default "tokensvc").
	// Segments of letters, digits, '_' and '-' separated by '/'; it also prefixes Transit
	// key names (with '/' as '.'), so several deployments can share a Vault.
	Prefix string
	// TransitMount is the Transit mount path (default "transit").
	TransitMount string
	// RequestTimeout bounds each Vault call on the request path (reads, HMACs); default
	// 250ms, so a hung Vault never stalls a token request longer than that.
	RequestTimeout time.Duration
	// WriteTimeout bounds each provisioning write, delete and Transit import, and every
	// read made by an operator operation other than GetDevice and GetHub (default 5s):
	// operators can wait, and aborting half-way only leaves work to clean up.
	WriteTimeout time.Duration
	// ListTimeout bounds LIST calls (default 5s), whose cost grows with the fleet: a
	// LIST of 100,000 devices took 1-1.6s against a dev server on 2 cores, so it cannot
	// live within RequestTimeout. Only operator listings and DeleteHub LIST.
	ListTimeout time.Duration
	// PKIMount is the PKI secrets engine mount that signs device certificates
	// (default "pki"); PKIRole the role it signs with when a hub names none (default
	// "tokensvc-device"). See pki.go.
	PKIMount string
	PKIRole  string
	// TransitBatchMax is the most Transit HMACs (or issuer signatures) with one key
	// sent in one call when they arrive concurrently (see batch.go); 0 or 1 sends
	// every one in a call of its own. At most 1024. The service defaults it to
	// DefaultTransitBatchMax.
	TransitBatchMax int
	// TransitBatchWait bounds how long a batch that queued behind a call in flight
	// may wait for more items: it goes once it holds as many as that call carried
	// (or TransitBatchMax), or when the wait has passed; 0 (the default) sends it as
	// soon as the call before it returns. A key with nothing in flight never waits.
	TransitBatchWait time.Duration
}

// Option adjusts how New sets up a Store.
type Option func(*options)

type options struct {
	logger    *slog.Logger
	now       func() time.Time
	authState func() error
}

// WithLogger sets where the store reports leftovers it could not clean up (orphan
// markers, keys or claims; never key material); nil means slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock sets the clock used to stamp records, claims and deleting marks; nil means
// time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithAuthState tells the store whether its client is logged in: state returns nil
// while it is, and why not while it is not (vaultauth.Authenticator.Ready does). While
// it is not, a 403 from Vault means the client's token ran out while no new one could
// be had — typically Vault came back from an outage the token did not outlive, and the
// next login attempt is still to come — so it is reported as store.ErrUnavailable, not
// ErrPermissionDenied: callers back off and serve what they cached, as during the
// outage, instead of failing with a server error. A 403 while logged in is still a
// policy problem and ErrPermissionDenied.
func WithAuthState(state func() error) Option { return func(o *options) { o.authState = state } }

// Store is a store.Store and tokens.TransitSigner backed by Vault. It is safe for
// concurrent use, also by several replicas sharing one Vault and Prefix.
type Store struct {
	c         *vault.Client
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	authState func() error // nil: assume logged in
	closed    atomic.Bool

	kvData    string // {mount}/data/{prefix}
	kvMeta    string // {mount}/metadata/{prefix}
	kvDestroy string // {mount}/destroy/{prefix}
	keyPrefix string // Transit key name prefix

	// wrapKey caches Transit's RSA wrapping key: it is fixed per mount, and fetching it
	// for every import would double the calls of a bulk import.
	wrapMu  sync.Mutex
	wrapKey *rsa.PublicKey

	// listing is the last LIST of the devices folder, reused by ListDevices for the
	// pages after the first; listGroup makes concurrent pages share one LIST.
	listMu    sync.Mutex
	listing   *deviceListing
	listGroup singleflight.Group

	batch transitBatchers
	// hubs are the hub reads device creates share (hubcheck.go).
	hubs hubChecks
	// groups are the marker writes device creates share (groups.go).
	groups groupMarkers
}

var _ store.Store = (*Store)(nil)

var (
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*$`)
	mountRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$`)
)

// New returns a Store using client, which must be configured with MaxRetries = 0 (see
// the package documentation). It does not contact Vault; Ping does.
func New(client *vault.Client, cfg Config, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("vaultstore: nil vault client")
	}
	cfg = withDefaults(cfg)
	if !mountRE.MatchString(cfg.Mount) || strings.Contains(cfg.Mount, "..") {
		return nil, fmt.Errorf("vaultstore: invalid KV mount %q", cfg.Mount)
	}
	if !mountRE.MatchString(cfg.TransitMount) || strings.Contains(cfg.TransitMount, "..") {
		return nil, fmt.Errorf("vaultstore: invalid Transit mount %q", cfg.TransitMount)
	}
	if !mountRE.MatchString(cfg.PKIMount) || strings.Contains(cfg.PKIMount, "..") {
		return nil, fmt.Errorf("vaultstore: invalid PKI mount %q", cfg.PKIMount)
	}
	if !roleRE.MatchString(cfg.PKIRole) {
		return nil, fmt.Errorf("vaultstore: invalid PKI role %q: letters, digits, '.', '_' and '-'", cfg.PKIRole)
	}
	if !prefixRE.MatchString(cfg.Prefix) {
		return nil, fmt.Errorf("vaultstore: invalid prefix %q: use letters, digits, '_' and '-' in segments separated by '/'", cfg.Prefix)
	}
	if cfg.RequestTimeout < 0 || cfg.WriteTimeout < 0 || cfg.ListTimeout < 0 || cfg.TransitBatchWait < 0 {
		return nil, errors.New("vaultstore: timeouts must not be negative")
	}
	if cfg.TransitBatchMax < 0 || cfg.TransitBatchMax > MaxTransitBatch {
		return nil, fmt.Errorf("vaultstore: Transit batch size %d: want 0 to %d", cfg.TransitBatchMax, MaxTransitBatch)
	}
	if cfg.TransitBatchWait > cfg.RequestTimeout {
		return nil, fmt.Errorf("vaultstore: Transit batch wait %v exceeds the request timeout %v", cfg.TransitBatchWait, cfg.RequestTimeout)
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	s := &Store{
		c:         client,
		cfg:       cfg,
		log:       o.logger,
		now:       o.now,
		authState: o.authState,
		kvData:    cfg.Mount + "/data/" + cfg.Prefix,
		kvMeta:    cfg.Mount + "/metadata/" + cfg.Prefix,
		kvDestroy: cfg.Mount + "/destroy/" + cfg.Prefix,
		keyPrefix: strings.ReplaceAll(cfg.Prefix, "/", "."),
	}
	s.startBatchers()
	return s, nil
}

func withDefaults(cfg Config) Config {
	if cfg.Mount == "" {
		cfg.Mount = DefaultMount
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.TransitMount == "" {
		cfg.TransitMount = DefaultTransitMount
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.ListTimeout == 0 {
		cfg.ListTimeout = DefaultListTimeout
	}
	if cfg.PKIMount == "" {
		cfg.PKIMount = DefaultPKIMount
	}
	if cfg.PKIRole == "" {
		cfg.PKIRole = DefaultPKIRole
	}
	return cfg
}

// Config returns the configuration in effect, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// Close marks the store closed; later calls fail with ErrClosed. Transit batches in
// flight are cancelled and waited for. The Vault client belongs to the caller and is
// left as it is. The hub records kept from recent reads are dropped. Close may be
// called more than once.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.closeBatchers()
	// The recent hub reads hold KV-mode hubs' policy keys: none outlives the Store.
	s.hubs.mu.Lock()
	clear(s.hubs.seen)
	s.hubs.mu.Unlock()
	return nil
}

func (s *Store) live() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Ping checks that Vault answers and accepts the store's token (a token lookup-self,
// which every token's default policy allows): store.ErrUnavailable when Vault cannot be
// reached, is sealed or answers 5xx within RequestTimeout, ErrPermissionDenied when the
// token is refused.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.live(); err != nil {
		return fmt.Errorf("ping vault: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.c.Logical().ReadRawWithContext(ctx, "auth/token/lookup-self")
	closeResponse(resp)
	if err != nil {
		return fmt.Errorf("ping vault: %w", s.classify(ctx, err, "read", "auth/token/lookup-self"))
	}
	return nil
}
