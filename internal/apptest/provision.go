package apptest

import (
	"context"
	"testing"

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
	return PostDevice(s.tb, s.Admin, d)
}

// PostHub creates h through c (POST /hubs, with the API's rules) and returns the hub;
// any answer but 201 fails tb.
func PostHub(tb testing.TB, c *oapi.ClientWithResponses, h oapi.HubCreate) oapi.Hub {
	tb.Helper()
	resp, err := c.CreateHubWithResponse(context.Background(), h)
	return created(tb, "create hub "+h.Name, err, func() (*oapi.Hub, int, []byte) {
		return resp.JSON201, resp.StatusCode(), resp.Body
	})
}

// PostDevice creates d through c (POST /devices) and returns what the API returns once
// (an HS256 device's secret among it); any answer but 201 fails tb.
func PostDevice(tb testing.TB, c *oapi.ClientWithResponses, d oapi.DeviceCreate) oapi.DeviceCreated {
	tb.Helper()
	resp, err := c.CreateDeviceWithResponse(context.Background(), d)
	return created(tb, "create device "+d.DeviceId, err, func() (*oapi.DeviceCreated, int, []byte) {
		return resp.JSON201, resp.StatusCode(), resp.Body
	})
}

// created is the body of a 201 answer to a create: answer gives it (nil without one),
// the status and the raw body. A failed call (err) or any other answer fails tb.
func created[T any](tb testing.TB, what string, err error, answer func() (*T, int, []byte)) T {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
	got, status, body := answer()
	if got == nil {
		tb.Fatalf("%s: got %d %s, want 201", what, status, body)
	}
	return *got
}
