package testpeer

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Audience is the assertion audience the test service accepts.
const Audience = "tokensvc"

// Service is tokensvc built by app.New (through apptest) over the embedded store,
// served with TLS on loopback. It can be taken down (connections refused) and brought
// back on the same address, or have its key store become unreachable, when it answers
// 503 with Retry-After as it does in production.
type Service struct {
	*apptest.Service
	tb     testing.TB
	outage *apptest.Outage
	// apiHubs: CertificateHub goes through the operator API, not CreateHub (the
	// service on the Vault store, StartVaultService).
	apiHubs bool
}

// StartService starts tokensvc with a certificate from ca for 127.0.0.1.
func StartService(tb testing.TB, ca *CA) *Service {
	tb.Helper()
	outage := apptest.NewOutage(apptest.FileStore(tb))
	leaf := ca.Issue(tb, "127.0.0.1")
	svc := apptest.Start(tb, apptest.Options{
		Store:   outage,
		CertPEM: leaf.CertPEM, KeyPEM: leaf.KeyPEM, RootCAs: ca.Pool(),
		Config: func(c *app.Config) {
			// Agents refetch at will in these tests (outages, reboots, short lifetimes);
			// the per-device limit would turn that into 429s the tests are not about.
			c.Limits.DeviceRate = 0
		},
	})
	return &Service{Service: svc, tb: tb, outage: outage}
}

// SetUnavailable makes the key store unreachable (or reachable again): GET /token
// answers 503 with Retry-After.
func (s *Service) SetUnavailable(on bool) { s.outage.SetDown(on) }

// Issued counts tokens the service issued (its "token issued" log records).
func (s *Service) Issued() int {
	return strings.Count(s.Logs.String(), `"msg":"token issued"`)
}

// Disable disables or enables a device through the operator API.
func (s *Service) Disable(id string, disabled bool) {
	s.tb.Helper()
	resp, err := s.Admin.UpdateDeviceWithResponse(context.Background(), id, oapi.DevicePatch{Disabled: &disabled})
	if err != nil || resp.StatusCode() != http.StatusOK {
		s.tb.Fatalf("update device %s: %v %v", id, err, resp.StatusCode())
	}
}
