package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

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
	secret := []byte(*gw.Auth.Secret)
	const pool = 20_000
	assertions := make([]string, pool)
	for i := range assertions {
		c := e.claims("gw")
		c["jti"] = strconv.Itoa(i)
		if assertions[i], err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret); err != nil {
			b.Fatal(err)
		}
	}
	h := e.handler
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(assertions) {
			b.Fatal("assertion pool exhausted; raise pool")
		}
		req := httptest.NewRequest(http.MethodPost, "/token/batch", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+assertions[i])
		req.Header.Set("Content-Type", "application/json")
		i++
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"error"`) {
			b.Fatalf("got %d %.300s", rec.Code, rec.Body)
		}
	}
}
