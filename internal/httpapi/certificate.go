package httpapi

import (
	"context"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
)

// The device-certificate operations (issue 13) are specified; their implementation
// lands with the certificate authority. Until then both refuse with a 400 that says so.

// GetCertificate refuses: device certificates are not built yet.
func (s *Server) GetCertificate(context.Context, oapiserver.GetCertificateRequestObject) (oapiserver.GetCertificateResponseObject, error) {
	return nil, domain.Invalid("device certificates are not available in this build yet")
}

// GetHubCA refuses: device certificates are not built yet.
func (s *Server) GetHubCA(context.Context, oapiserver.GetHubCARequestObject) (oapiserver.GetHubCAResponseObject, error) {
	return nil, domain.Invalid("device certificates are not available in this build yet")
}
