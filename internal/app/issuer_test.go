package app_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestIssuerKeysOnVault builds the service on a real Vault with a token holding only
// deploy/vault/tokensvc.hcl: issuer keys are Transit keys, the published PEM key
// verifies what the service's ring signs, and the ring's KV setting holds no private key.
func TestIssuerKeysOnVault(t *testing.T) {
	srv := vaulttest.Start(t)
	root := srv.Client(t)
	token := srv.PolicyToken(t, "../../deploy/vault/tokensvc.hcl", "1h")
	svc := apptest.Start(t, apptest.Options{Config: func(c *app.Config) {
		c.Store = "vault"
		c.Vault.Address, c.Vault.Token = srv.Addr, token
		c.Issuer.Issuer = "https://tokens.example.com"
	}})
	ctx := t.Context()
	for _, alg := range []string{"RS256", "ES256"} {
		// The first key of alg: made by the ring's start-up task or by this call.
		signed, kid, err := svc.App.IssuerKeys().SignJWT(ctx, alg, map[string]any{"iss": "https://tokens.example.com", "sub": "d1"})
		if err != nil {
			t.Fatalf("sign %s: %v", alg, err)
		}
		if sec, err := root.Logical().Read("transit/keys/tokensvc-i-" + kid); err != nil || sec == nil {
			t.Errorf("%s: no Transit key tokensvc-i-%s (%v)", alg, kid, err)
		}
		resp, err := svc.Admin.RotateIssuerKeyWithResponse(ctx, oapi.IssuerKeyRotate{Alg: oapi.IssuerKeyAlgorithm(alg)})
		if err != nil || resp.JSON201 == nil {
			t.Fatalf("rotate %s: %v %s", alg, err, resp.Body)
		}
		if k := *resp.JSON201; !deref(k.Transit) || k.State != "pending" {
			t.Errorf("rotated-in %s key: transit %v state %s, want a Transit key, pending", alg, deref(k.Transit), k.State)
		}
		pemResp, err := http.Get(svc.URL + "/issuer/keys/" + kid + "/public-key.pem")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(pemResp.Body)
		pemResp.Body.Close()
		block, _ := pem.Decode(body)
		if block == nil {
			t.Fatalf("%s: public-key.pem: %d %q", alg, pemResp.StatusCode, body)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwt.Parse(signed, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{alg})); err != nil {
			t.Errorf("%s: the Transit-signed JWT does not verify with the published key: %v", alg, err)
		}
	}
	setting, err := svc.App.Store().GetSetting(ctx, issuerkeys.SettingName)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(setting, []byte("PRIVATE KEY")) || bytes.Contains(setting, []byte(`"private"`)) {
		t.Error("the ring's KV setting holds private key material")
	}
}

func deref[T any](p *T) T {
	var zero T
	if p != nil {
		return *p
	}
	return zero
}
