package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// BenchmarkTokenBatch500 is one POST /token/batch for 500 children of one gateway,
// in-process over the embedded store (limits and audit off): the cost a gateway with
// 500 leaves pays per refresh round. ns/op is per batch, not per token.
func BenchmarkTokenBatch500(b *testing.B) {
	e := mustBenchEnv(b)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	gw := e.mustDevice(oapi.DeviceCreate{DeviceId: "gw", Hub: "main", Gateway: ptr(true), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	ids := make([]string, 500)
	for i := range ids {
		ids[i] = fmt.Sprintf("leaf-%04d", i)
		e.mustDevice(oapi.DeviceCreate{DeviceId: ids[i], Hub: "main", Parent: ptr("gw"), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	}
	body, err := json.Marshal(oapi.TokenBatchRequest{Devices: ids})
	if err != nil {
		b.Fatal(err)
	}
	assertions := e.assertionPool(b, "gw", []byte(*gw.Auth.Secret), 20_000)
	benchAsserted(b, assertions, func() *http.Request {
		req := httptest.NewRequest(http.MethodPost, "/token/batch", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		return req
	}, e.handler.ServeHTTP, func(rec *httptest.ResponseRecorder) bool {
		return rec.Code == http.StatusOK && !strings.Contains(rec.Body.String(), `"error"`)
	})
}
