package apptest

import (
	"context"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
)

// CreateHub registers h through a registry over the service's store, on the service's
// clock and with the kinds it serves (issuer kinds when it has an issuer): the
// provisioning rules without the API's 60-second minimum lifetime, so tests can use
// tokens that live for seconds. It returns the hub as stored.
func (s *Service) CreateHub(h domain.Hub) domain.Hub {
	s.tb.Helper()
	var opts []registry.Option
	if s.issuer {
		opts = append(opts, registry.WithIssuer())
	}
	out, err := registry.New(s.App.Store(), kinds.All(), s.now, opts...).CreateHub(context.Background(), h)
	if err != nil {
		s.tb.Fatalf("create hub %s: %v", h.Name, err)
	}
	return out
}

// CreateDevice registers d through the operator API and returns what the API returns
// once (an HS256 device's secret among it).
func (s *Service) CreateDevice(d oapi.DeviceCreate) oapi.DeviceCreated {
	s.tb.Helper()
	resp, err := s.Admin.CreateDeviceWithResponse(context.Background(), d)
	if err != nil {
		s.tb.Fatal(err)
	}
	if resp.JSON201 == nil {
		s.tb.Fatalf("create device %s: got %d %s, want 201", d.DeviceId, resp.StatusCode(), resp.Body)
	}
	return *resp.JSON201
}
