package httpapi_test

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestGatewayAuthenticatesAnyWay: a gateway that proves itself with a nonce assertion
// or a client certificate obtains its child's token the same way, single and batched,
// and a certificate device that is not a gateway is refused the child.
func TestGatewayAuthenticatesAnyWay(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) // mustEnv's clock
	ca := mustCert(t, now, testca.Spec{CommonName: "device CA", CA: true}, nil)
	e := mustEnvWith(t, envOptions{mtls: true, clientCA: []*testca.Cert{ca}, config: noDeviceLimits})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	e.mustDevice(oapi.DeviceCreate{DeviceId: "gw-cert", Hub: "main", Gateway: ptr(true), Auth: oapi.CredentialCreate{Type: oapi.X509Ca}})
	e.mustDevice(oapi.DeviceCreate{DeviceId: "plain-cert", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.X509Ca}})
	gwNonce := e.mustDevice(oapi.DeviceCreate{DeviceId: "gw-nonce", Hub: "main", Gateway: ptr(true), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	leafA := e.mustDevice(oapi.DeviceCreate{DeviceId: "leaf-a", Hub: "main", Parent: ptr("gw-cert"), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	leafB := e.mustDevice(oapi.DeviceCreate{DeviceId: "leaf-b", Hub: "main", Parent: ptr("gw-nonce"), Auth: oapi.CredentialCreate{Type: oapi.Hs256}})

	certOf := func(cn string) *oapi.ClientWithResponses {
		return e.certClient(mustCert(t, now, testca.Spec{CommonName: cn}, ca))
	}
	gwCert, plainCert := certOf("gw-cert"), certOf("plain-cert")
	ctx := t.Context()

	resp, err := gwCert.GetTokenWithResponse(ctx, &oapi.GetTokenParams{Device: ptr("leaf-a")})
	if err != nil || resp.JSON200 == nil {
		t.Fatalf("certificate gateway for its child: got %v %s", err, resp.Body)
	}
	mustVerify(t, resp.JSON200.Token, *leafA.PrimaryKey, signer.KeyBase64, e.clock.Now())
	if resp, err := gwCert.GetTokenWithResponse(ctx, &oapi.GetTokenParams{Device: ptr("leaf-b")}); err != nil || resp.StatusCode() != 403 {
		t.Errorf("certificate gateway for another gateway's child: got %v %d, want 403", err, resp.StatusCode())
	}
	if resp, err := plainCert.GetTokenWithResponse(ctx, &oapi.GetTokenParams{Device: ptr("leaf-a")}); err != nil || resp.StatusCode() != 403 {
		t.Errorf("certificate non-gateway for a child: got %v %d, want 403", err, resp.StatusCode())
	}
	batch, err := gwCert.GetTokenBatchWithResponse(ctx, &oapi.GetTokenBatchParams{}, oapi.TokenBatchRequest{Devices: []string{"leaf-a", "leaf-b"}})
	if err != nil || batch.JSON200 == nil || len(batch.JSON200.Results) != 2 {
		t.Fatalf("certificate gateway batch: got %v %s", err, batch.Body)
	}
	if r := batch.JSON200.Results; r[0].Token == nil || r[1].Error == nil || r[1].Error.Status != 403 {
		t.Errorf("certificate gateway batch: got %+v, want leaf-a's token and a 403 for leaf-b", r)
	}

	// A gateway without a clock: a nonce stands in for iat/exp/jti.
	n := e.mustNonce()
	assertion := mustSign(t, jwt.SigningMethodHS256, nonceClaims("gw-nonce", n.Nonce), []byte(*gwNonce.Auth.Secret))
	resp = e.getToken(assertion, &oapi.GetTokenParams{Device: ptr("leaf-b")})
	if resp.JSON200 == nil {
		t.Fatalf("nonce gateway for its child: got %d %s", resp.StatusCode(), resp.Body)
	}
	mustVerify(t, resp.JSON200.Token, *leafB.PrimaryKey, signer.KeyBase64, e.clock.Now())
}
