package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/handshake"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/metrics"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

var (
	_ httpapi.AdminChecker          = (*adminauth.Authenticator)(nil)
	_ httpapi.DeviceVerifier        = (*deviceauth.Verifier)(nil)
	_ httpapi.CertVerifier          = (*deviceauth.Verifier)(nil)
	_ httpapi.Limiter               = (*limits.Limits)(nil)
	_ httpapi.Observer              = (*metrics.Metrics)(nil)
	_ httpapi.Auditor               = (*audit.Logger)(nil)
	_ httpapi.OperatorAuthenticator = (*operatorauth.Authenticator)(nil)
)

// run is the whole program; main only wires signals and the process environment to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	var verifierOpts []deviceauth.Option
	if cfg.ClientCA != "" {
		// Read before anything is opened, so a bad file fails the start cheaply.
		pool, err := loadClientCA(cfg.ClientCA)
		if err != nil {
			return err
		}
		verifierOpts = append(verifierOpts, deviceauth.WithClientCA(pool))
	}

	m := metrics.New(prometheus.NewRegistry())
	auditLog, closeAudit, err := openAudit(cfg.Audit, stdout, log)
	if err != nil {
		return err
	}
	defer closeAudit()

	be, err := openBackend(ctx, cfg, log, m)
	if err != nil {
		return err
	}
	st := be.store
	defer st.Close()

	admin, generated, err := adminauth.Bootstrap(ctx, st, cfg.AdminToken)
	if err != nil {
		return err
	}
	if generated != "" {
		// Printed once, on stdout and not in the log; only its hash is kept.
		fmt.Fprintf(stdout, "tokensvc: generated admin token (shown once, store it now): %s\n", generated)
	}

	now := time.Now
	var regOpts []registry.Option
	if be.transit != nil {
		regOpts = append(regOpts, registry.WithTransit())
	}
	verifier := deviceauth.NewVerifier(st, cfg.Audience, now, verifierOpts...)
	if cfg.Store == "embedded" {
		// One file, one process: used jti values survive a restart (README, security model).
		if err := verifier.Restore(ctx, st); err != nil {
			return err
		}
		defer func() {
			if err := verifier.Save(context.Background(), st); err != nil {
				log.Error("replay memory not saved", "error", err.Error())
			}
		}()
	}
	var tasks []func(context.Context) error
	var oidc operatorauth.TokenVerifier
	if cfg.OIDC.Issuer != "" {
		o, err := operatorauth.NewOIDC(operatorauth.OIDCConfig{
			Issuer:     cfg.OIDC.Issuer,
			Audience:   cfg.OIDC.Audience,
			JWKSURL:    cfg.OIDC.JWKSURL,
			RolesClaim: cfg.OIDC.RolesClaim,
			Algorithms: cfg.OIDC.Algorithms,
			Refresh:    cfg.OIDC.Refresh,
		}, nil, now, log)
		if err != nil {
			return err
		}
		oidc = o
		tasks = append(tasks, o.Run)
	}
	operators := operatorauth.New(admin, oidc)
	deps := httpapi.Deps{
		Registry:  registry.New(st, kinds.All(), now, regOpts...),
		Issuer:    tokens.NewIssuer(st, kinds.All(), signer.New(now), be.transit),
		Devices:   verifier,
		Admin:     admin,
		Operators: operators,
		Limits:    limits.New(cfg.Limits, now),
		Metrics:   m,
		Audit:     auditLog,
		Ready:     be.ready,
		Logger:    log,
	}
	if cfg.MetricsAddr == "" {
		deps.MetricsHandler = m.Handler()
	}
	if cfg.ClientAuth == "optional" {
		deps.Certs = verifier
	}
	handler, err := httpapi.New(deps)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert != "" {
		tcfg, err := serverTLS(cfg)
		if err != nil {
			ln.Close()
			return err
		}
		if cfg.MaxHandshakes > 0 {
			// A waiter gives up a second before net/http's handshake deadline (which it
			// takes from ReadHeaderTimeout), so it fails on its own terms.
			lim := handshake.New(cfg.MaxHandshakes, srv.ReadHeaderTimeout-time.Second)
			tcfg = lim.Config(tcfg)
			srv.ConnState = lim.ConnState
			m.RegisterHandshakes(lim)
		}
		srv.TLSConfig = tcfg
	}
	if cfg.MetricsAddr != "" {
		// Listening before "listening" is logged: both addresses take requests from then on.
		task, err := serveMetrics(cfg.MetricsAddr, cfg.Pprof, m, cfg.ShutdownTimeout, log)
		if err != nil {
			ln.Close()
			return err
		}
		tasks = append(tasks, task)
	}
	log.Info("listening", "addr", ln.Addr().String(), "store", cfg.Store, "tls", cfg.TLSCert != "", "clientAuth", cfg.ClientAuth)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if cfg.TLSCert != "" {
			err = srv.ServeTLS(ln, "", "") // the certificate is in srv.TLSConfig
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	})
	for _, task := range append(tasks, be.tasks...) {
		g.Go(func() error { return task(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "drain", cfg.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// loadClientCA reads a PEM file of CA certificates; anything but parseable CERTIFICATE
// blocks is an error rather than silently skipped, so a wrong file cannot leave the
// service trusting less (or other) than the operator meant.
func loadClientCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client ca: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("client ca %s: PEM block %q is not a CERTIFICATE", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("client ca %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("client ca %s: no PEM certificate found", path)
	}
	return pool, nil
}

// openAudit opens the configured audit sink; the returned func closes it.
func openAudit(cfg AuditConfig, stdout io.Writer, log *slog.Logger) (*audit.Logger, func(), error) {
	onError := func(err error) { log.Error("audit record lost", "error", err.Error()) }
	switch cfg.Sink.Kind {
	case "off":
		return nil, func() {}, nil
	case "file":
		f, err := audit.OpenRotating(cfg.Sink.Path, cfg.MaxBytes, cfg.Keep)
		if err != nil {
			return nil, nil, err
		}
		return audit.New(f, nil, onError), func() { _ = f.Close() }, nil
	}
	return audit.New(stdout, nil, onError), func() {}, nil
}

// serverTLS is the API listener's TLS configuration: the certificate, HTTP/2 and
// HTTP/1.1, and with mutual TLS a request (not a requirement) for a client certificate.
func serverTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// Set here because a handshake limit hands out per-connection copies of this
		// configuration, which ServeTLS's own additions would not reach.
		NextProtos: []string{"h2", "http/1.1"},
	}
	if cfg.ClientAuth == "optional" {
		// Request, not require or verify: devices that sign assertions connect without a
		// certificate, and pinned self-signed certificates chain to nothing. Which
		// certificate proves which device is decided per request (deviceauth.VerifyCert).
		c.ClientAuth = tls.RequestClientCert
	}
	return c, nil
}

// serveMetrics listens on addr now (so a bad address fails the start) and returns the
// task that serves /metrics there until ctx ends.
func serveMetrics(addr string, pprofOn bool, m *metrics.Metrics, drain time.Duration, log *slog.Logger) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if pprofOn {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve metrics: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}, nil
}
