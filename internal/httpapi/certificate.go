package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

// Device certificates (issue 13): POST /token/certificate signs the calling device's
// CSR with its hub's CA; GET /hubs/{name}/ca.pem publishes that CA for registering with
// the cloud. Authentication, the rate limits and the in-flight bound are the same as
// GET /token's (auth.go); the request is recorded where tokens are (observe.go).

// MaxCertificateBodyBytes bounds a POST /token/certificate body (413 beyond): a CSR is
// at most devicecert.MaxCSRBytes of PEM, and JSON escaping can double it.
const MaxCertificateBodyBytes = 4 * devicecert.MaxCSRBytes

const certificatePath = "/token/certificate"

// errNoCertificates refuses certificate operations on a service built without a CA.
var errNoCertificates = errors.New("device certificates are not enabled on this service")

// GetCertificate signs the CSR of the device the request authenticated.
func (s *Server) GetCertificate(ctx context.Context, req oapiserver.GetCertificateRequestObject) (oapiserver.GetCertificateResponseObject, error) {
	rt := routedOf(ctx)
	if rt == nil || rt.device.ID == "" {
		return nil, fmt.Errorf("GetCertificate reached without an authenticated device")
	}
	if s.deps.Certificates == nil {
		return nil, domain.Public(errBadRequest, "%v", errNoCertificates)
	}
	if req.Body == nil {
		return nil, domain.Public(errBadRequest, "the body must be a CertificateRequest")
	}
	cr := devicecert.Request{CSR: req.Body.Csr, ModuleID: deref(req.Body.Module), TTL: durationOf(req.Body.Ttl)}
	issued, err := s.issuer.certificate(ctx, s.deps.Certificates, rt.device, cr)
	if err != nil {
		return nil, err
	}
	body := certificateToAPI(issued)
	if prefersText(rt.accept) {
		return certificateText{body}, nil
	}
	return oapiserver.GetCertificate200JSONResponse{
		Body:    body,
		Headers: oapiserver.GetCertificate200ResponseHeaders{CacheControl: &noStore},
	}, nil
}

// GetHubCA returns the PEM CA chain of a hub in mode certificate.
func (s *Server) GetHubCA(ctx context.Context, req oapiserver.GetHubCARequestObject) (oapiserver.GetHubCAResponseObject, error) {
	if s.deps.Certificates == nil {
		return nil, domain.Public(errBadRequest, "%v", errNoCertificates)
	}
	chain, err := s.deps.Certificates.HubCA(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return oapiserver.GetHubCA200ApplicationxPemFileResponse{Body: strings.NewReader(chain), ContentLength: int64(len(chain))}, nil
}

// ImportHubCA makes an operator's CA the CA of a hub in mode certificate (admin only:
// the spec tags it admin).
func (s *Server) ImportHubCA(ctx context.Context, req oapiserver.ImportHubCARequestObject) (oapiserver.ImportHubCAResponseObject, error) {
	if s.deps.Certificates == nil {
		return nil, domain.Public(errBadRequest, "%v", errNoCertificates)
	}
	if req.Body == nil {
		return nil, domain.Public(errBadRequest, "the body must be a HubCAImport")
	}
	if err := s.deps.Certificates.ImportCA(ctx, req.Name, req.Body.Certificate, req.Body.Key); err != nil {
		return nil, err
	}
	return oapiserver.ImportHubCA204Response{}, nil
}

// certificateToAPI is the response body; the profiles convert as GET /token's do.
func certificateToAPI(is devicecert.Issued) oapi.CertificateResponse {
	p := tokenToAPI(tokens.Issued{
		Hub:           is.Hub,
		Profiles:      is.Profile.Profiles,
		IssuedAt:      is.IssuedAt,
		TLSServerName: is.Profile.TLSServerName,
		CACert:        is.Profile.CACert,
	})
	if p.Amqp != nil {
		p.Amqp.Cbs.Node, p.Amqp.Cbs.TokenType = "", "" // no CBS: the certificate authenticates
	}
	serverTime := is.IssuedAt.UTC().Truncate(time.Second)
	return oapi.CertificateResponse{
		Certificate:    is.Certificate,
		CaCertificates: is.Chain,
		SerialNumber:   is.Serial,
		ExpiresAt:      is.ExpiresAt.UTC(),
		ExpiresIn:      seconds(is.ExpiresAt.Sub(serverTime)),
		RefreshAfter:   is.RefreshAfter.UTC(),
		ServerTime:     serverTime,
		Hub:            is.Hub.Name,
		Kind:           oapi.HubKind(is.Hub.Kind),
		Mqtt:           p.Mqtt,
		Amqp:           p.Amqp,
		Https:          p.Https,
	}
}

// certificateText is the key=value form: the PEM texts on one line each, their line
// breaks written as the two characters \n; times as in GET /token's text form.
type certificateText struct{ body oapi.CertificateResponse }

func (t certificateText) VisitGetCertificateResponse(w http.ResponseWriter) error {
	b := t.body
	var tl textLines
	oneLine := func(pem string) string { return strings.ReplaceAll(strings.TrimSpace(pem), "\n", `\n`) }
	tl.line("certificate", oneLine(b.Certificate))
	tl.line("caCertificates", oneLine(b.CaCertificates))
	tl.times(b.ExpiresIn, b.RefreshAfter, b.ExpiresAt, b.ServerTime, "serialNumber", b.SerialNumber)
	tl.profiles(b.Mqtt, b.Amqp, b.Https, "")
	return tl.write(w)
}
