package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

var (
	_ httpapi.AdminChecker   = (*adminauth.Authenticator)(nil)
	_ httpapi.DeviceVerifier = (*deviceauth.Verifier)(nil)
)

// run is the whole program; main only wires signals and the process environment to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	be, err := openBackend(ctx, cfg, log)
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
	handler, err := httpapi.New(httpapi.Deps{
		Store:    st,
		Registry: registry.New(st, now, regOpts...),
		Issuer:   tokens.NewIssuer(st, signer.New(now), be.transit),
		Devices:  deviceauth.NewVerifier(st, cfg.Audience, now),
		Admin:    admin,
		Ready:    be.ready,
		Logger:   log,
	})
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
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening", "addr", ln.Addr().String(), "store", cfg.Store, "tls", cfg.TLSCert != "")

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if cfg.TLSCert != "" {
			err = srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	})
	for _, task := range be.tasks {
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
