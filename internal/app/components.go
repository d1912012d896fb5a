package app

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/operatorauth"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// newClientCA reads the CA(s) of x509-ca devices, when configured, into the verifier's
// options.
func (a *App) newClientCA() ([]deviceauth.Option, error) {
	if a.cfg.ClientCA == "" {
		return nil, nil
	}
	pool, err := loadClientCA(a.cfg.ClientCA)
	if err != nil {
		return nil, err
	}
	return []deviceauth.Option{deviceauth.WithClientCA(pool)}, nil
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

// newAudit opens the configured audit sink; nil when it is off.
func (a *App) newAudit() (*audit.Logger, error) {
	onError := func(err error) {
		a.metrics.AuditLost()
		a.log.Error("audit record lost", "error", err.Error())
	}
	switch a.cfg.Audit.Sink.Kind {
	case "off":
		return nil, nil
	case "file":
		f, err := audit.OpenRotating(a.cfg.Audit.Sink.Path, int64(a.cfg.Audit.MaxMB)<<20, a.cfg.Audit.Keep)
		if err != nil {
			return nil, err
		}
		a.onClose(f.Close)
		f.OnRotateError(func(err error) {
			a.log.Error("audit file not rotated; records go on to the current file", "error", err.Error())
		})
		return audit.New(f, a.o.now, onError), nil
	}
	return audit.New(a.o.stdout, a.o.now, onError), nil
}

// newAdmin loads or bootstraps the admin token; a generated one is printed once, on
// stdout and not in the log, and only its hash is kept.
func (a *App) newAdmin(ctx context.Context) (*adminauth.Authenticator, error) {
	admin, generated, err := adminauth.Bootstrap(ctx, a.store, a.cfg.AdminToken)
	if err != nil {
		return nil, err
	}
	if generated != "" {
		fmt.Fprintf(a.o.stdout, "tokensvc: generated admin token (shown once, store it now): %s\n", generated)
	}
	return admin, nil
}

// newVerifier is the device authenticator; with the embedded store it restores the
// replay memory the previous process saved (or refuses early assertions if it did not).
// Its nonce keys live in the store, so every replica accepts every replica's nonces;
// their reload becomes a task.
func (a *App) newVerifier(ctx context.Context, opts []deviceauth.Option) (*deviceauth.Verifier, error) {
	keys := deviceauth.NewNonceKeys(a.store, a.o.now, a.log)
	if err := keys.Load(ctx); err != nil {
		return nil, err
	}
	a.tasks = append(a.tasks, keys.Run)
	opts = append(opts, deviceauth.WithNonceKeys(keys))
	v := deviceauth.NewVerifier(a.store, a.cfg.Audience, a.o.now, opts...)
	if a.cfg.Store == "embedded" {
		if err := v.Restore(ctx, a.store); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// newOperators authenticates operators: the admin token, and OIDC JWTs when an issuer
// is configured (its key refresh becomes a task).
func (a *App) newOperators(admin *adminauth.Authenticator) (*operatorauth.Authenticator, error) {
	if a.cfg.OIDC.Issuer == "" {
		return operatorauth.New(admin, nil), nil
	}
	o, err := operatorauth.NewOIDC(a.cfg.OIDC, nil, a.o.now, a.log)
	if err != nil {
		return nil, err
	}
	a.tasks = append(a.tasks, o.Run)
	return operatorauth.New(admin, o), nil
}

// newIssuerKeys is the issuer key ring over the store, its private keys held by the
// backend's choice; nil when the backend has none. Its reload becomes a task.
func (a *App) newIssuerKeys(be *backend) (*issuerkeys.Ring, error) {
	if be.issuerKeys == nil {
		return nil, nil
	}
	r, err := issuerkeys.New(a.store, be.issuerKeys, a.cfg.Issuer,
		issuerkeys.WithClock(a.o.now), issuerkeys.WithLogger(a.log), issuerkeys.WithHubs(a.store))
	if err != nil {
		return nil, err
	}
	a.tasks = append(a.tasks, r.Run)
	a.keys = r
	return r, nil
}

// newHandler wires the HTTP API.
func (a *App) newHandler(be *backend, admin *adminauth.Authenticator, operators *operatorauth.Authenticator, auditLog *audit.Logger) (http.Handler, error) {
	ring, err := a.newIssuerKeys(be)
	if err != nil {
		return nil, err
	}
	var regOpts []registry.Option
	if be.transit != nil {
		regOpts = append(regOpts, registry.WithTransit())
	}
	if ring != nil && a.cfg.Issuer.Issuer != "" {
		regOpts = append(regOpts, registry.WithIssuer())
	}
	served := kinds.All() // the target kinds this service knows, for registry and issuer alike
	var keys target.IssuerSigner
	if ring != nil {
		keys = ring // only when set: a nil *Ring in an interface is not a nil interface
	}
	deps := httpapi.Deps{
		Registry:  registry.New(a.store, served, a.o.now, regOpts...),
		Issuer:    tokens.NewIssuer(a.store, served, signer.New(a.o.now), be.transit, keys),
		Devices:   a.verifier,
		Admin:     admin,
		Operators: operators,
		Limits:    limits.New(a.cfg.Limits, a.o.now, a.limitOpts...),
		Metrics:   a.metrics,
		Ready:     a.readiness(be.ready),
		Logger:    a.log,

		ImportWorkers: a.cfg.importWorkers(),
	}
	if ring != nil {
		deps.Keys = ring
	}
	if be.backup != nil {
		deps.Backup = be.backup
	}
	if be.ca != nil {
		deps.Certificates = devicecert.NewIssuer(a.store, served, be.ca, a.o.now)
	}
	if auditLog != nil {
		// Not assigned when nil: a nil *audit.Logger in the interface is not a nil Auditor.
		deps.Audit = auditLog
	}
	if a.cfg.MetricsAddr == "" {
		deps.MetricsHandler = a.metrics.Handler()
	}
	if a.cfg.ClientAuth == "optional" {
		deps.Certs = a.verifier
	}
	return httpapi.New(deps)
}
