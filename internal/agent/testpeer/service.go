package testpeer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// Audience is the assertion audience the test service accepts.
const Audience = "tokensvc"

const adminToken = "agent-test-admin-token-0123456789"

// Service is tokensvc's real HTTP API over the embedded store, served with TLS on
// loopback, wired as cmd/tokensvc wires it. It can be taken down (connections refused)
// and brought back on the same address, or made to answer 503 with Retry-After as it
// does while its key store is unreachable.
type Service struct {
	// URL is the service's https:// base URL.
	URL string

	tb       testing.TB
	addr     string
	handler  http.Handler
	tlsConf  *tls.Config
	registry *registry.Registry
	admin    *oapi.ClientWithResponses
	logs     *syncbuf.Buffer

	mu          sync.Mutex
	srv         *http.Server
	unavailable atomic.Bool
	requests    atomic.Int64
}

// StartService starts tokensvc with a certificate from ca for 127.0.0.1.
func StartService(tb testing.TB, ca *CA) *Service {
	tb.Helper()
	st, err := filestore.Open(filepath.Join(tb.TempDir(), "tokensvc.db"), make([]byte, 32))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	admin, _, err := adminauth.Bootstrap(context.Background(), st, adminToken)
	if err != nil {
		tb.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	reg := registry.New(st, kinds.All(), time.Now)
	h, err := httpapi.New(httpapi.Deps{
		Registry: reg,
		Issuer:   tokens.NewIssuer(st, kinds.All(), signer.New(time.Now), nil),
		Devices:  deviceauth.NewVerifier(st, Audience, time.Now),
		Admin:    admin,
		Ready:    func(ctx context.Context) (string, error) { return "", st.Ping(ctx) },
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	leaf := ca.Issue(tb, "127.0.0.1")
	s := &Service{tb: tb, handler: h, registry: reg, logs: logs,
		tlsConf: &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.URL = "https://" + s.addr
	s.serve(ln)
	tb.Cleanup(s.Down)

	pool := newPool(ca)
	s.admin, err = oapi.NewClientWithResponses(s.URL,
		oapi.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}),
		oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+adminToken)
			return nil
		}))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *Service) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.route), ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(tls.NewListener(ln, s.tlsConf))
}

func (s *Service) route(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		s.requests.Add(1)
		if s.unavailable.Load() {
			// What tokensvc answers while its key store is down.
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": "Service Unavailable", "status": 503})
			return
		}
	}
	s.handler.ServeHTTP(w, r)
}

// Down stops the service: new connections are refused and open ones closed.
func (s *Service) Down() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
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

// SetUnavailable makes GET /token answer 503 with Retry-After: 1 (or serve again).
func (s *Service) SetUnavailable(on bool) { s.unavailable.Store(on) }

// TokenRequests counts GET /token requests that reached the service.
func (s *Service) TokenRequests() int64 { return s.requests.Load() }

// Issued counts tokens the service issued (its "token issued" audit records).
func (s *Service) Issued() int {
	return strings.Count(s.logs.String(), `"msg":"token issued"`)
}

// Logs returns the service's log.
func (s *Service) Logs() string { return s.logs.String() }

// Hub registers a hub through the registry — the provisioning rules without the API's
// 60-second minimum lifetime, so tests can use tokens that live for seconds.
func (s *Service) Hub(h domain.Hub) domain.Hub {
	s.tb.Helper()
	out, err := s.registry.CreateHub(context.Background(), h)
	if err != nil {
		s.tb.Fatalf("create hub: %v", err)
	}
	return out
}

// Device registers a device through the operator API and returns what it returns once.
func (s *Service) Device(d oapi.DeviceCreate) oapi.DeviceCreated {
	s.tb.Helper()
	resp, err := s.admin.CreateDeviceWithResponse(context.Background(), d)
	if err != nil {
		s.tb.Fatal(err)
	}
	if resp.JSON201 == nil {
		s.tb.Fatalf("create device %s: got %d %s, want 201", d.DeviceId, resp.StatusCode(), resp.Body)
	}
	return *resp.JSON201
}

// Disable disables or enables a device through the operator API.
func (s *Service) Disable(id string, disabled bool) {
	s.tb.Helper()
	resp, err := s.admin.UpdateDeviceWithResponse(context.Background(), id, oapi.DevicePatch{Disabled: &disabled})
	if err != nil || resp.StatusCode() != http.StatusOK {
		s.tb.Fatalf("update device %s: %v %v", id, err, resp.StatusCode())
	}
}
