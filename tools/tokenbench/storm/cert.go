package storm

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

// The certificate storm (-certificate): each device POSTs a CSR for its P-256 key to
// /token/certificate. The CSRs are made before the storm, so the storm times the
// service, not the devices' signing.

// csrBodies returns each device's POST /token/certificate body.
func csrBodies(devs []bench.KeyDevice) ([]string, error) {
	out := make([]string, len(devs))
	for i, d := range devs {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: d.ID}}, d.Key)
		if err != nil {
			return nil, fmt.Errorf("CSR of %s: %w", d.ID, err)
		}
		b, err := json.Marshal(map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
		if err != nil {
			return nil, err
		}
		out[i] = string(b)
	}
	return out, nil
}

// postCertificate builds one POST of body with assertion.
func postCertificate(url, assertion, body string) func(ctx context.Context) (*http.Request, error) {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+assertion)
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	}
}

// tryCertificate is one device's exchange of the certificate storm.
func tryCertificate(ctx context.Context, client *http.Client, p params, assertion, body string) bench.Outcome {
	return bench.TryRequest(ctx, client, p.timeout, postCertificate(p.url, assertion, body))
}

// probeCertificate asks for one certificate before the storm, so a misconfigured hub
// fails the run at once; it returns the response body.
func probeCertificate(ctx context.Context, client *http.Client, url, assertion, body string) ([]byte, error) {
	return bench.ProbeRequest(ctx, client, "POST /token/certificate", postCertificate(url, assertion, body))
}
