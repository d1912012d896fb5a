package issuerkeys_test

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// TestTransitRing runs the ring with its private keys in a real Vault's Transit: the
// keys are Transit keys, the ring's KV setting holds no private key, the JWTs and
// PKCS#1 signatures verify, and a Vault outage fails signing with
// store.ErrUnavailable while the published keys are still served from memory.
func TestTransitRing(t *testing.T) {
	srv := vaulttest.Start(t)
	prefix := fmt.Sprintf("ik%d", time.Now().UnixNano()%1e6)
	vs, err := vaultstore.New(srv.Client(t), vaultstore.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	c := newClock()
	r, err := issuerkeys.New(vs, issuerkeys.Transit(vs), issuerkeys.Config{Issuer: issuerURL},
		issuerkeys.WithClock(c.Now), issuerkeys.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	root := srv.Client(t)
	kids := map[string]string{}
	for _, tc := range []struct {
		alg, transitType string
		sigLen           int
	}{{"ES256", "ecdsa-p256", 64}, {"RS256", "rsa-2048", 256}} {
		tok, kid, err := r.SignJWT(ctx, tc.alg, map[string]any{"iss": issuerURL, "sub": "dev-1"})
		if err != nil {
			t.Fatal(err)
		}
		kids[tc.alg] = kid
		verify(t, r, tok, tc.alg, c.Now())
		sig, _ := base64.RawURLEncoding.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
		if len(sig) != tc.sigLen {
			t.Errorf("%s signature has %d bytes, want %d", tc.alg, len(sig), tc.sigLen)
		}
		if k := keyByID(t, r, kid); !k.Transit {
			t.Errorf("%s key not marked Transit", tc.alg)
		}
		sec, err := root.Logical().Read("transit/keys/" + prefix + "-i-" + kid)
		if err != nil || sec == nil || sec.Data["type"] != tc.transitType {
			t.Errorf("%s: Transit key %s-i-%s: %v %v, want type %s", tc.alg, prefix, kid, sec, err, tc.transitType)
		}
	}
	msg := []byte("token-to-sign")
	sig, err := r.SignPKCS1(ctx, kids["RS256"], msg)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(keyByID(t, r, kids["RS256"]).Public.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("Transit PKCS#1 signature does not verify: %v", err)
	}
	k2, err := r.Rotate(ctx, domain.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	if len(k2.Certificate) == 0 {
		t.Error("a Transit key has no certificate")
	}

	setting, err := vs.GetSetting(ctx, issuerkeys.SettingName)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"PRIVATE KEY", `"private"`} {
		if bytes.Contains(setting, []byte(bad)) {
			t.Errorf("the ring's KV setting contains %q", bad)
		}
	}

	srv.Pause()
	defer srv.Resume()
	if _, _, err := r.SignJWT(ctx, "ES256", map[string]any{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("sign during an outage: got %v, want store.ErrUnavailable", err)
	}
	if keys, _, err := r.Keys(ctx); err != nil || len(keys) != 3 {
		t.Errorf("keys during an outage: %d (%v), want 3 from memory", len(keys), err)
	}
}
