package awsauth_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

// FuzzHandle feeds arbitrary events to the authorizer: it must answer every one without
// a panic or an error, and never authenticate (no seed carries a valid token, and none
// can be made without the issuer's key).
func FuzzHandle(f *testing.F) {
	iss := testissuer.New(f, issuerURL)
	keys, err := awsauth.ParsePEMKeys(pemKeys(iss, iss.Current("RS256"), iss.Current("ES256")))
	if err != nil {
		f.Fatal(err)
	}
	a, err := awsauth.New(awsauth.Config{
		Issuer: issuerURL, Endpoint: endpoint, Keys: "inline", TokenKeyName: "token", Region: "eu-west-1", AccountID: account,
		SubscribeTemplates: []string{"commands/{deviceId}/#"},
	}, keys, func() time.Time { return t0 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	forged, _, _ := testissuer.New(f, issuerURL).SignJWT(context.Background(), "RS256", map[string]any{
		"iss": issuerURL, "sub": "d1", "aud": endpoint, "iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix()})
	for _, seed := range []string{
		`{"token":"a.b.c","signatureVerified":true,"protocols":["tls","mqtt"],"protocolData":{"tls":{"serverName":"x"},"mqtt":{"username":"d1?x-amz-customauthorizer-name=n&token=a.b.c","password":"cGFzcw==","clientId":"d1"}},"connectionMetadata":{"id":"1"}}`,
		`{"protocols":["tls","http"],"protocolData":{"http":{"headers":{"token":"` + forged + `"},"queryString":"?qos=1&token=x"}}}`,
		`{"protocols":["tls","mqtt"],"protocolData":{"mqtt":{"username":"d1?%zz","password":"%%%","clientId":"d1"}}}`,
		`{"token":"` + forged + `","protocols":["tls","http","mqtt"],"protocolData":{"mqtt":{"clientId":"d1"}}}`,
		`{}`, `null`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r awsauth.Request
		if json.Unmarshal(data, &r) != nil {
			return
		}
		res, err := a.Handle(context.Background(), r)
		if err != nil || res.IsAuthenticated {
			t.Fatalf("got %+v, %v for %q", res, err, data)
		}
	})
}
