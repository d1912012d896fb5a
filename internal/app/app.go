// Package app builds the whole tokensvc service from one Config: the key store, the
// authenticators, limits, metrics, audit and the HTTP API, with one newX helper per
// component. cmd/tokensvc and every test that needs a running service build it here, so
// what the tests run is what ships.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/metrics"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/target"
)

var (
	_ httpapi.AdminChecker          = (*adminauth.Authenticator)(nil)
	_ httpapi.DeviceVerifier        = (*deviceauth.Verifier)(nil)
	_ httpapi.CertVerifier          = (*deviceauth.Verifier)(nil)
	_ httpapi.Limiter               = (*limits.Limits)(nil)
	_ httpapi.Observer              = (*metrics.Metrics)(nil)
	_ httpapi.Auditor               = (*audit.Logger)(nil)
	_ httpapi.OperatorAuthenticator = (*operatorauth.Authenticator)(nil)
	_ httpapi.IssuerKeys            = (*issuerkeys.Ring)(nil)
	_ target.IssuerSigner           = (*issuerkeys.Ring)(nil)
)

// Option changes what New builds the service with.
type Option func(*options)

type options struct {
	now      func() time.Time
	store    store.Store
	log      *slog.Logger
	registry *prometheus.Registry
	stdout   io.Writer
}

// WithClock sets the clock of every component (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithStore serves an already-open store instead of opening the configured one; the
// caller keeps it and closes it. Config.Store still says whether it is the one-node
// embedded kind (replay memory saved across restarts) or not.
func WithStore(st store.Store) Option { return func(o *options) { o.store = st } }

// WithLogger sets the service log (default JSON on stderr at Config.LogLevel).
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// WithRegistry registers the service's metrics with reg (default a new registry).
func WithRegistry(reg *prometheus.Registry) Option { return func(o *options) { o.registry = reg } }

// WithStdout is where the audit sink "stdout" writes and a generated admin token is
// printed (default os.Stdout).
func WithStdout(w io.Writer) Option { return func(o *options) { o.stdout = w } }

// App is the built service: its HTTP handler, the server settings to serve it with,
// and the background tasks that run beside it. Close it after serving.
type App struct {
	cfg       Config
	o         options
	log       *slog.Logger
	metrics   *metrics.Metrics
	store     store.Store
	verifier  *deviceauth.Verifier
	keys      *issuerkeys.Ring
	handler   http.Handler
	tls       *tls.Config
	connState func(net.Conn, http.ConnState)
	// listen wraps the API listener (the handshake bound's), nil when nothing does.
	listen func(net.Listener) net.Listener
	tasks  []func(context.Context) error
	// closers undo what New opened (audit file, store, metrics listener), last first.
	closers []func() error

	// replayPing checks the shared replay store; nil when there is none.
	replayPing func(ctx context.Context) error
	// limitOpts put the device rate-limit buckets in the replay store when asked to.
	limitOpts []limits.Option
}

// New builds the service described by cfg, which it validates first. What New opened
// is closed again when it fails.
func New(ctx context.Context, cfg Config, opts ...Option) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{now: time.Now, stdout: os.Stdout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	if o.registry == nil {
		o.registry = prometheus.NewRegistry()
	}
	a := &App{cfg: cfg, o: o, log: o.log, metrics: metrics.New(o.registry)}
	if err := a.build(ctx); err != nil {
		_ = a.closeAll()
		return nil, err
	}
	return a, nil
}

// build runs the newX helpers in dependency order.
func (a *App) build(ctx context.Context) error {
	// The client CA is read before anything is opened, so a bad file fails cheaply.
	verifierOpts, err := a.newClientCA()
	if err != nil {
		return err
	}
	replayOpts, err := a.newReplay()
	if err != nil {
		return err
	}
	verifierOpts = append(verifierOpts, replayOpts...)
	auditLog, err := a.newAudit()
	if err != nil {
		return err
	}
	be, err := a.newBackend(ctx)
	if err != nil {
		return err
	}
	a.store = be.store
	a.tasks = append(a.tasks, be.tasks...)
	admin, err := a.newAdmin(ctx)
	if err != nil {
		return err
	}
	if a.verifier, err = a.newVerifier(ctx, verifierOpts); err != nil {
		return err
	}
	operators, err := a.newOperators(admin)
	if err != nil {
		return err
	}
	if a.handler, err = a.newHandler(be, admin, operators, auditLog); err != nil {
		return err
	}
	if a.tls, err = a.newTLS(); err != nil {
		return err
	}
	return a.newMetricsServer()
}

// Handler is the service's HTTP API.
func (a *App) Handler() http.Handler { return a.handler }

// Store is the store the service serves (instrumented, behind the key cache if any).
func (a *App) Store() store.Store { return a.store }

// IssuerKeys is the issuer key ring the service signs JWT credentials with; nil when
// its store has no issuer key backend.
func (a *App) IssuerKeys() *issuerkeys.Ring { return a.keys }

// Tasks are the background tasks to run while serving, each until its context ends:
// Vault token renewal, the OIDC key refresh, the separate metrics listener.
func (a *App) Tasks() []func(context.Context) error { return a.tasks }

// Close saves the replay memory (embedded store) and releases what New opened. Call
// it once, after serving has stopped.
func (a *App) Close() error {
	var errs []error
	if a.cfg.Store == "embedded" && a.verifier != nil {
		// One file, one process: used jti values survive a clean restart (README,
		// security model). Saved after the drain, so no request adds one afterwards.
		if err := a.verifier.Save(context.Background(), a.store); err != nil {
			a.log.Error("replay memory not saved", "error", err.Error())
			errs = append(errs, err)
		}
	}
	errs = append(errs, a.closeAll())
	return errors.Join(errs...)
}

func (a *App) closeAll() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

func (a *App) onClose(f func() error) { a.closers = append(a.closers, f) }
