package httpapi

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// AdminChecker checks the static admin token.
type AdminChecker interface {
	Check(token string) bool
}

// OperatorAuthenticator authenticates operator requests (the spec's adminToken scheme).
type OperatorAuthenticator interface {
	// Authenticate returns the operator r's bearer token proves; errors wrap
	// operatorauth.ErrUnauthenticated.
	Authenticate(r *http.Request) (operatorauth.Principal, error)
}

// DeviceVerifier turns a device assertion into the device it proves.
type DeviceVerifier interface {
	Verify(ctx context.Context, assertion string) (domain.Device, error)
}

// CertVerifier authenticates devices by TLS client certificate (mutual TLS).
type CertVerifier interface {
	// VerifyCert returns the device the chain (leaf first) proves; errors wrap
	// deviceauth.ErrUnauthenticated, or store.ErrUnavailable when the device could
	// not be looked up.
	VerifyCert(ctx context.Context, certs []*x509.Certificate) (domain.Device, error)
}

// Provisioner carries out the operator operations: provisioning rules on writes, and
// reads through the same layer. Its errors are typed and client-safe: they wrap
// domain.ErrInvalid, registry.ErrNotSupported or a store sentinel in a
// domain.PublicError; anything else is unexpected.
type Provisioner interface {
	CreateHub(ctx context.Context, h domain.Hub) (domain.Hub, error)
	GetHub(ctx context.Context, name string) (domain.Hub, error)
	ListHubs(ctx context.Context) ([]domain.Hub, error)
	DeleteHub(ctx context.Context, name string) error
	CreateDevice(ctx context.Context, d domain.Device) (registry.Created, error)
	ImportDevice(ctx context.Context, d domain.Device) (registry.Created, registry.ImportResult, error)
	// NewBatch starts a bulk import running up to workers lines at once, each with the
	// outcome it would have had in input order.
	NewBatch(ctx context.Context, workers int) *registry.Batch
	GetDevice(ctx context.Context, id string) (domain.Device, error)
	ListDevices(ctx context.Context, cursor string, limit int) (store.Page, error)
	// ListChildren is ListDevices keeping only the devices whose parent is gateway.
	ListChildren(ctx context.Context, gateway, cursor string, limit int) (store.Page, error)
	UpdateDevice(ctx context.Context, id string, p registry.DevicePatch) (domain.Device, error)
	DeleteDevice(ctx context.Context, id string) error
	RotateKeys(ctx context.Context, id, moduleID string) (registry.Rotated, error)
	Revoke(ctx context.Context, id string) (domain.Device, error)
}

var _ Provisioner = (*registry.Registry)(nil)

// TokenIssuer mints tokens for authenticated devices.
type TokenIssuer interface {
	Issue(ctx context.Context, d domain.Device, r tokens.Request) (tokens.Issued, error)
}

// CertificateIssuer issues device certificates (mode certificate) and publishes each
// hub's CA; *devicecert.Issuer implements it.
type CertificateIssuer interface {
	// Issue signs r's CSR for device d (authenticated). Errors wrap domain.ErrInvalid
	// (bad CSR, hub not in mode certificate), target.ErrForbidden (module not the
	// device's) or store.ErrUnavailable (the CA cannot be reached).
	Issue(ctx context.Context, d domain.Device, r devicecert.Request) (devicecert.Issued, error)
	// HubCA returns the PEM CA chain of hub name; store.ErrNotFound for no such hub,
	// domain.ErrInvalid for a hub not in mode certificate.
	HubCA(ctx context.Context, name string) (string, error)
	// ImportCA makes an operator's CA the CA of hub name; errors as HubCA, and
	// devicecert.ErrImportNotSupported when the CA lives in Vault.
	ImportCA(ctx context.Context, name, certPEM, keyPEM string) error
}

var _ CertificateIssuer = (*devicecert.Issuer)(nil)

// Limiter refuses requests beyond the configured rates and concurrency. Refusals are
// errors that wrap limits.ErrRateLimited or limits.ErrOverloaded and carry a
// RetryAfter() int in seconds.
type Limiter interface {
	// Global takes from the service-wide bucket.
	Global() error
	// Device takes from one authenticated device's bucket.
	Device(id string) error
	// Acquire claims an in-flight slot without waiting.
	Acquire() (release func(), err error)
}

// Observer receives the service's metrics. Label values are bounded: route patterns,
// hub names and kinds, outcomes; never device IDs. HTTPRequest gets the request's raw
// method; implementations fold nonstandard ones into one value.
type Observer interface {
	HTTPRequest(method, route string, status int, d time.Duration)
	RateLimited(limit string)
	TokenRequest(hub, kind, outcome string)
}

// Auditor records issued tokens and operator changes.
type Auditor interface {
	Log(r audit.Record)
}

// StoreBackup writes a consistent copy of the store to w, calling size with its length
// first (filestore.Store.Backup).
type StoreBackup interface {
	Backup(ctx context.Context, w io.Writer, size func(int64)) (int64, error)
}

// Deps are what the API needs.
type Deps struct {
	// Registry carries out every operator operation, reads included.
	Registry Provisioner
	Issuer   TokenIssuer
	// Certificates issues device certificates; nil refuses POST /token/certificate
	// and GET /hubs/{name}/ca.pem with a 400.
	Certificates CertificateIssuer
	// Keys is the issuer key ring the JWT kinds sign with; nil publishes an empty set.
	Keys    IssuerKeys
	Devices DeviceVerifier
	// Certs authenticates devices by TLS client certificate on requests without an
	// Authorization header; nil (mutual TLS off) ignores client certificates.
	Certs CertVerifier
	// Admin checks the static admin token; used when Operators is nil.
	Admin AdminChecker
	// Operators authenticates operators (static admin token, OIDC JWTs); nil means
	// the static admin token only.
	Operators OperatorAuthenticator
	// Limits bounds request rates and concurrency; nil means no limits.
	Limits Limiter
	// Metrics observes requests and tokens; nil means none.
	Metrics Observer
	// MetricsHandler serves GET /metrics when set (nil when metrics are served on a
	// separate listener, or not at all).
	MetricsHandler http.Handler
	// Audit receives one record per token request and operator change; nil means none.
	Audit Auditor
	// Ready reports whether the service can serve: an error makes /readyz 503; a
	// non-empty note (e.g. Vault unreachable while cached keys are served) reports
	// "degraded" with 200. Nil means always ready.
	Ready  func(ctx context.Context) (note string, err error)
	Logger *slog.Logger
	// Backup copies the embedded store for POST /store/backup; nil (the Vault store)
	// answers 400.
	Backup StoreBackup
	// ImportWorkers is how many lines of a bulk import are imported at once; zero means
	// DefaultImportWorkers, one imports them one after the other.
	ImportWorkers int
}
