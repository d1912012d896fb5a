// Package apptest starts tokensvc for tests the way cmd/tokensvc starts it: through
// app.New with the shipped defaults (limits, metrics, audit, the handshake bound and
// replay restore included), over the embedded store in a temporary directory, on a
// loopback listener. Tests vary it through the same Config the binary reads, plus a
// clock and, where a test needs a store failure on demand, a store of their own.
// Only tests import it.
package apptest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// AdminToken is the admin token of every test service.
const AdminToken = "apptest-admin-token-0123456789"

// Options vary the service a test starts; the zero value is the shipped configuration.
type Options struct {
	// Config adjusts the configuration before the service is built. It starts as
	// app.Defaults with a temporary data directory and AdminToken.
	Config func(c *app.Config)
	// Clock is every component's clock; nil means time.Now.
	Clock func() time.Time
	// Store replaces the configured store (app.WithStore); the test closes it.
	Store store.Store
	// CertPEM and KeyPEM, when set, make the service serve HTTPS with them;
	// ClientCAPEM is written to a file for Config.ClientCA.
	CertPEM, KeyPEM, ClientCAPEM string
	// RootCAs verifies the service's certificate for HTTPClient.
	RootCAs *x509.CertPool
	// Stdout receives audit records (and would receive a generated admin token);
	// nil means the Service's Stdout buffer.
	Stdout io.Writer
	// LogLevel is the service log's level; nil means debug. Benchmarks set warn, the
	// level the bench scripts run tokensvc at.
	LogLevel slog.Leveler
}

// Service is a running tokensvc.
type Service struct {
	// URL is the base URL, http:// or https://.
	URL string
	// App is the service as app.New built it.
	App *app.App
	// Logs is the service log (JSON, debug level); Stdout its standard output, where
	// audit records go.
	Logs, Stdout *syncbuf.Buffer
	// HTTPClient trusts the service's certificate.
	HTTPClient *http.Client
	// Admin is a generated client authenticated with AdminToken.
	Admin *oapi.ClientWithResponses

	tb      testing.TB
	now     func() time.Time
	issuer  bool // the service has an issuer URL and key ring: issuer kinds are served
	addr    string
	mu      sync.Mutex
	srv     *http.Server
	serving sync.WaitGroup
}

// Start builds the service with app.New, serves it on 127.0.0.1 and runs its tasks;
// everything stops, and the App is closed, when the test ends.
func Start(tb testing.TB, o Options) *Service {
	tb.Helper()
	dir := tb.TempDir()
	cfg := app.Defaults()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.AdminToken = AdminToken
	if o.CertPEM != "" {
		cfg.TLSCert, cfg.TLSKey = writeFile(tb, dir, "tls.crt", o.CertPEM), writeFile(tb, dir, "tls.key", o.KeyPEM)
	}
	if o.ClientCAPEM != "" {
		cfg.ClientCA = writeFile(tb, dir, "client-ca.pem", o.ClientCAPEM)
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	s := &Service{tb: tb, Logs: &syncbuf.Buffer{}, Stdout: &syncbuf.Buffer{}}
	if o.LogLevel == nil {
		o.LogLevel = slog.LevelDebug
	}
	opts := []app.Option{
		app.WithLogger(slog.New(slog.NewJSONHandler(s.Logs, &slog.HandlerOptions{Level: o.LogLevel}))),
		app.WithStdout(s.Stdout),
	}
	if o.Stdout != nil {
		opts = append(opts, app.WithStdout(o.Stdout))
	}
	if o.Clock != nil {
		opts = append(opts, app.WithClock(o.Clock))
	}
	if o.Store != nil {
		opts = append(opts, app.WithStore(o.Store))
	}
	a, err := app.New(context.Background(), cfg, opts...)
	if err != nil {
		tb.Fatalf("app.New: %v", err)
	}
	s.App = a
	s.now, s.issuer = o.Clock, cfg.Issuer.Issuer != "" && a.IssuerKeys() != nil
	ctx, cancel := context.WithCancel(context.Background())
	var tasks sync.WaitGroup
	for _, task := range a.Tasks() {
		tasks.Go(func() {
			if err := task(ctx); err != nil {
				tb.Errorf("service task: %v", err)
			}
		})
	}
	tb.Cleanup(func() {
		s.Down()
		cancel()
		tasks.Wait()
		if err := a.Close(); err != nil {
			tb.Errorf("close service: %v", err)
		}
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		tb.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.URL = "http://" + s.addr
	tr := &http.Transport{}
	if a.TLSConfig() != nil {
		s.URL = "https://" + s.addr
		tr.TLSClientConfig = &tls.Config{RootCAs: o.RootCAs}
	}
	s.HTTPClient = &http.Client{Transport: tr}
	tb.Cleanup(tr.CloseIdleConnections)
	s.serve(ln)
	s.Admin = s.Client(AdminToken)
	return s
}

// FileStore opens an embedded store in a temporary directory, closed when the test
// ends: for tests that also reach the store the service runs on (Options.Store).
func FileStore(tb testing.TB) *filestore.Store {
	tb.Helper()
	st, err := filestore.Open(filepath.Join(tb.TempDir(), "tokensvc.db"), make([]byte, filestore.KeySize))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Client returns a generated client that sends bearer (none when empty).
func (s *Service) Client(bearer string) *oapi.ClientWithResponses {
	s.tb.Helper()
	return NewClient(s.tb, s.URL, bearer, s.HTTPClient)
}

// NewClient returns a generated client for url over hc that sends bearer (none when
// empty).
func NewClient(tb testing.TB, url, bearer string, hc *http.Client) *oapi.ClientWithResponses {
	tb.Helper()
	c, err := oapi.NewClientWithResponses(url, oapi.WithHTTPClient(hc), oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		return nil
	}))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (s *Service) serve(ln net.Listener) {
	srv := s.App.Server()
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	s.serving.Go(func() {
		if err := s.App.ServeOn(srv, ln); err != nil {
			s.tb.Errorf("serve: %v", err)
		}
	})
}

// Down stops serving: new connections are refused and open ones closed. The App and
// its tasks keep running.
func (s *Service) Down() {
	s.mu.Lock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
	s.mu.Unlock()
	s.serving.Wait()
}

// Up serves again on the same address.
func (s *Service) Up() {
	s.tb.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port was just released; it is normally free at once
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("service back up on %s: %v", s.addr, err)
	}
	s.serve(ln)
}
