package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
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

	key, err := masterKey(cfg)
	if err != nil {
		return err
	}
	st, err := filestore.Open(filepath.Join(cfg.DataDir, "tokensvc.db"), key, filestore.WithLogger(log))
	if err != nil {
		return fmt.Errorf("open embedded store: %w", err)
	}
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
	handler, err := httpapi.New(httpapi.Deps{
		Store:    st,
		Registry: registry.New(st, now),
		Issuer:   tokens.NewIssuer(st, signer.New(now), nil),
		Devices:  deviceauth.NewVerifier(st, cfg.Audience, now),
		Admin:    admin,
		Ready:    st.Ping,
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

	errc := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			errc <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "drain", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

func masterKey(cfg Config) ([]byte, error) {
	if cfg.MasterKey != "" {
		k, err := filestore.ParseMasterKey(cfg.MasterKey)
		if err != nil {
			return nil, fmt.Errorf("TOKENSVC_MASTER_KEY: %w", err)
		}
		return k, nil
	}
	k, err := filestore.LoadOrCreateMasterKey(cfg.MasterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return k, nil
}
