package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/handshake"
)

// readHeaderTimeout bounds a request's headers, and with it net/http's TLS handshake
// deadline.
const readHeaderTimeout = 5 * time.Second

// newTLS is the API listener's TLS configuration (nil without a certificate): the
// certificate, HTTP/2 and HTTP/1.1, with mutual TLS a request (not a requirement) for a
// client certificate, and the handshake bound.
func (a *App) newTLS() (*tls.Config, error) {
	if a.cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(a.cfg.TLSCert, a.cfg.TLSKey)
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
	if a.cfg.ClientAuth == "optional" {
		// Request, not require or verify: devices that sign assertions connect without a
		// certificate, and pinned self-signed certificates chain to nothing. Which
		// certificate proves which device is decided per request (deviceauth.VerifyCert).
		c.ClientAuth = tls.RequestClientCert
	}
	if a.cfg.MaxHandshakes > 0 {
		// A waiter gives up a second before net/http's handshake deadline (which it
		// takes from ReadHeaderTimeout), so it fails on its own terms.
		lim := handshake.New(a.cfg.MaxHandshakes, readHeaderTimeout-time.Second)
		c = lim.Config(c)
		a.connState, a.listen = lim.ConnState, lim.Listener
		a.metrics.RegisterHandshakes(lim)
	}
	return c, nil
}

// TLSConfig is the API listener's TLS configuration, nil when it serves plain HTTP.
func (a *App) TLSConfig() *tls.Config { return a.tls }

// Server returns a new http.Server for the API: its handler, timeouts, header bound,
// TLS configuration and handshake bound. Serve uses it; tests that take the listener
// down and up again call it once per listener.
func (a *App) Server() *http.Server {
	return &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
		TLSConfig:         a.tls,
		ConnState:         a.connState,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
}

// ServeOn serves the API on ln with srv (from Server) until it is shut down; a closed
// server is not an error.
func (a *App) ServeOn(srv *http.Server, ln net.Listener) error {
	var err error
	if a.tls != nil {
		if a.listen != nil {
			ln = a.listen(ln) // a stalled client's handshake gives its slot back
		}
		err = srv.ServeTLS(ln, "", "") // the certificate is in srv.TLSConfig
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve: %w", err)
}

// Serve serves the API on ln and runs the tasks until ctx ends or one of them fails,
// then drains in-flight requests for up to the shutdown timeout.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	srv := a.Server()
	a.log.Info("listening", "addr", ln.Addr().String(), "store", a.cfg.Store, "tls", a.tls != nil, "clientAuth", a.cfg.ClientAuth)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.ServeOn(srv, ln) })
	for _, task := range a.tasks {
		g.Go(func() error { return task(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		a.log.Info("shutting down", "drain", a.cfg.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	a.log.Info("stopped")
	return nil
}

// newMetricsServer listens on the metrics address now (so a bad address fails the
// start) and adds the task that serves /metrics, and pprof if asked, there.
func (a *App) newMetricsServer() error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listen metrics: %w", err)
	}
	a.onClose(func() error { _ = ln.Close(); return nil }) // closed already once served
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	if a.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.log.Info("serving metrics", "addr", ln.Addr().String())
	a.tasks = append(a.tasks, func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve metrics: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	})
	return nil
}
