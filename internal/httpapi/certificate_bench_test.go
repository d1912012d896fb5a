package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// BenchmarkGetCertificate is the whole POST /token/certificate path in-process on the
// embedded CA (ECDSA P-256): routing, spec validation of the body, HS256 assertion,
// CSR check, signing, JSON. Compare with BenchmarkGetToken in the same run (same
// settings: limits and audit off).
func BenchmarkGetCertificate(b *testing.B) {
	e := mustBenchEnv(b)
	mode := oapi.Certificate
	e.mustHub(oapi.HubCreate{Name: "aws", Kind: oapi.Awsiot, Hostname: "abc-ats.iot.eu-west-1.amazonaws.com", Mode: &mode})
	dev := e.mustDevice(oapi.DeviceCreate{DeviceId: "bench-1", Hub: "aws", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	assertions := e.assertionPool(b, "bench-1", []byte(*dev.Auth.Secret), 100_000)
	body := `{"csr":` + strconv.Quote(testca.CSR(b, testca.P256Key(b), "x")) + `}`
	benchAsserted(b, assertions, func() *http.Request {
		req := httptest.NewRequest(http.MethodPost, "/token/certificate", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return req
	}, e.handler.ServeHTTP, nil)
}
