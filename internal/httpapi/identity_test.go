package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
)

func (e *env) mustNonce() oapi.Nonce {
	e.t.Helper()
	resp, err := e.anon.CreateNonceWithResponse(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.JSON200 == nil {
		e.t.Fatalf("create nonce: got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	if got := resp.HTTPResponse.Header.Get("Cache-Control"); got != "no-store" {
		e.t.Errorf("nonce Cache-Control: got %q, want no-store", got)
	}
	return *resp.JSON200
}

// nonceClaims are the claims of a device whose clock reads 2000-01-01: iat and exp are
// meaningless, the nonce stands in for them.
func nonceClaims(id, nonce string) jwt.MapClaims {
	y2k := time.Date(2000, 1, 1, 0, 0, 5, 0, time.UTC)
	return jwt.MapClaims{
		"iss": id, "sub": id, "aud": audience, "nonce": nonce,
		"iat": y2k.Unix(), "exp": y2k.Add(time.Minute).Unix(),
	}
}

func TestNonce(t *testing.T) {
	e := mustEnv(t)
	n := e.mustNonce()
	if len(n.Nonce) != 56 {
		t.Errorf("nonce: got %q (%d characters), want 56 (kid, time, 128 random bits and a 128-bit tag, base64url)", n.Nonce, len(n.Nonce))
	}
	if want := e.clock.Now().Add(60 * time.Second); !n.ExpiresAt.Equal(want) || !n.ServerTime.Equal(e.clock.Now()) {
		t.Errorf("got expiresAt %v serverTime %v, want %v and %v", n.ExpiresAt, n.ServerTime, want, e.clock.Now())
	}
	if n2 := e.mustNonce(); n2.Nonce == n.Nonce {
		t.Errorf("two nonces are equal: %q", n.Nonce)
	}
}

// TestNonceAuthorizationMatrix is every way a nonce assertion might be misused; each
// must fail with the same 401 as any other failure of proof.
func TestNonceAuthorizationMatrix(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	alice := e.mustDevice(oapi.DeviceCreate{DeviceId: "alice", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	bob := e.mustDevice(oapi.DeviceCreate{DeviceId: "bob", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	edPriv, edPub := mustEdKey(t)
	e.mustDevice(oapi.DeviceCreate{DeviceId: "ed", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Eddsa, PublicKey: &edPub}})
	off := e.mustDevice(oapi.DeviceCreate{DeviceId: "off", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Disabled: ptr(true)})
	aliceSecret, bobSecret := []byte(*alice.Auth.Secret), []byte(*bob.Auth.Secret)
	hs := func(c jwt.MapClaims, key []byte) string { return mustSign(t, jwt.SigningMethodHS256, c, key) }
	with := func(c jwt.MapClaims, edit func(jwt.MapClaims)) jwt.MapClaims { edit(c); return c }

	used := e.mustNonce().Nonce
	usedAssertion := hs(nonceClaims("alice", used), aliceSecret)
	stale := e.mustNonce().Nonce
	failedOnce := e.mustNonce().Nonce

	type step struct {
		name       string
		assertion  func() string
		wantStatus int
	}
	tests := []step{
		{"valid, iat in the year 2000", func() string { return usedAssertion }, 200},
		{"nonce reused, same assertion", func() string { return usedAssertion }, 401},
		{"nonce reused, new assertion", func() string { return hs(nonceClaims("alice", used), aliceSecret) }, 401},
		{"valid eddsa, iat 0", func() string {
			return mustSign(t, jwt.SigningMethodEdDSA, with(nonceClaims("ed", e.mustNonce().Nonce), func(c jwt.MapClaims) { c["iat"], c["exp"] = 0, 60 }), edPriv)
		}, 200},
		{"valid, no iat, exp or jti at all", func() string {
			return hs(with(nonceClaims("alice", e.mustNonce().Nonce), func(c jwt.MapClaims) { delete(c, "iat"); delete(c, "exp") }), aliceSecret)
		}, 200},
		{"unknown nonce", func() string { return hs(nonceClaims("alice", "AAAAAAAAAAAAAAAAAAAAAA"), aliceSecret) }, 401},
		{"oversized nonce", func() string { return hs(nonceClaims("alice", strings.Repeat("n", 100)), aliceSecret) }, 401},
		{"nonce with a wrong signature", func() string { return hs(nonceClaims("alice", failedOnce), bobSecret) }, 401},
		{"nonce for another device's sub", func() string { return hs(nonceClaims("bob", failedOnce), aliceSecret) }, 401},
		{"nonce, iss differs from sub", func() string {
			return hs(with(nonceClaims("alice", failedOnce), func(c jwt.MapClaims) { c["iss"] = "bob" }), aliceSecret)
		}, 401},
		{"nonce, wrong aud", func() string {
			return hs(with(nonceClaims("alice", failedOnce), func(c jwt.MapClaims) { c["aud"] = "someone-else" }), aliceSecret)
		}, 401},
		{"nonce, no aud", func() string {
			return hs(with(nonceClaims("alice", failedOnce), func(c jwt.MapClaims) { delete(c, "aud") }), aliceSecret)
		}, 401},
		{"nonce, alg none", func() string {
			return mustSign(t, jwt.SigningMethodNone, nonceClaims("alice", failedOnce), jwt.UnsafeAllowNoneSignatureType)
		}, 401},
		{"nonce, eddsa device presenting hs256 keyed with its public key", func() string {
			return hs(nonceClaims("ed", failedOnce), []byte(edPub))
		}, 401},
		{"nonce, disabled device", func() string { return hs(nonceClaims("off", failedOnce), []byte(*off.Auth.Secret)) }, 401},
		{"nonce, unknown device", func() string { return hs(nonceClaims("mallory", failedOnce), aliceSecret) }, 401},
		// None of the failures above consumed it.
		{"nonce survives failed attempts", func() string { return hs(nonceClaims("alice", failedOnce), aliceSecret) }, 200},
		{"nonce expired", func() string {
			e.clock.Advance(61 * time.Second)
			return hs(nonceClaims("alice", stale), aliceSecret)
		}, 401},
		{"assertion without a nonce keeps the clock rules", func() string {
			return hs(with(e.claims("alice"), func(c jwt.MapClaims) { c["iat"], c["exp"] = 946684805, 946684865 }), aliceSecret)
		}, 401},
	}
	var refusals sameRefusal
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.getToken(tt.assertion(), nil)
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if tt.wantStatus == 200 {
				// The device sets its clock from serverTime.
				if !resp.JSON200.ServerTime.Equal(e.clock.Now().Truncate(time.Second)) {
					t.Errorf("serverTime: got %v, want %v", resp.JSON200.ServerTime, e.clock.Now())
				}
				return
			}
			refusals.check(t, resp.Body)
		})
	}
}

func TestNonceConcurrentUseSucceedsOnce(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: "mcu", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	a := mustSign(t, jwt.SigningMethodHS256, nonceClaims("mcu", e.mustNonce().Nonce), []byte(*c.Auth.Secret))
	const n = 8
	codes := make(chan int, n)
	for range n {
		go func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/token", nil)
			req.Header.Set("Authorization", "Bearer "+a)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	ok := 0
	for range n {
		if <-codes == 200 {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("one nonce used concurrently %d times: got %d successes, want 1", n, ok)
	}
}

func TestRevokeDevice(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: "d1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	secret := []byte(*c.Auth.Secret)
	hs := func(cl jwt.MapClaims) string { return mustSign(t, jwt.SigningMethodHS256, cl, secret) }

	before := hs(e.claims("d1"))
	nonceBefore := e.mustNonce().Nonce
	e.clock.Advance(time.Second)
	resp, err := e.admin.RevokeDeviceWithResponse(t.Context(), "d1")
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil || resp.JSON200.RevokedAt == nil || !resp.JSON200.RevokedAt.Equal(e.clock.Now()) {
		t.Fatalf("revoke: got %d %s, want 200 with revokedAt %v", resp.StatusCode(), resp.Body, e.clock.Now())
	}
	if got, err := e.admin.GetDeviceWithResponse(t.Context(), "d1"); err != nil || got.JSON200 == nil || got.JSON200.RevokedAt == nil {
		t.Fatalf("get after revoke: got %v %+v, want revokedAt set", err, got)
	}
	e.clock.Advance(time.Second)
	tests := []struct {
		name       string
		assertion  string
		wantStatus int
	}{
		{"assertion issued before revocation", before, 401},
		{"nonce issued before revocation", hs(nonceClaims("d1", nonceBefore)), 401},
		{"assertion issued after revocation", hs(e.claims("d1")), 200},
		{"nonce issued after revocation", hs(nonceClaims("d1", e.mustNonce().Nonce)), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.getToken(tt.assertion, nil).StatusCode(); got != tt.wantStatus {
				t.Errorf("got %d, want %d", got, tt.wantStatus)
			}
		})
	}

	bad := []struct {
		name, path string
		want       int
	}{
		{"unknown device", "/devices/nobody/revoke", 404},
		{"bad device ID", "/devices/a%2Fb/revoke", 400},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.rawRequest(http.MethodPost, tt.path, adminToken, "", nil)
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("got %d %q %s, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.want)
			}
		})
	}
}

func TestRotateDeviceKeys(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	e.mustHub(oapi.HubCreate{Name: "policy-hub", Kind: oapi.Iothub, Hostname: hubHost, Mode: ptr(oapi.Policy), PolicyName: ptr("device"), PolicyKey: ptr(policyKey)})
	c := e.mustDevice(oapi.DeviceCreate{DeviceId: "d1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Modules: &[]oapi.ModuleCreate{{ModuleId: "m1"}}})
	e.mustDevice(oapi.DeviceCreate{DeviceId: "p1", Hub: "policy-hub", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	secret := []byte(*c.Auth.Secret)

	resp, err := e.admin.RotateDeviceKeysWithResponse(t.Context(), "d1", oapi.RotateDeviceKeysJSONRequestBody{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("rotate: got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	if got := resp.HTTPResponse.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", got)
	}
	r := resp.JSON200
	if r.PrimaryKey != *c.SecondaryKey || r.SecondaryKey == *c.SecondaryKey || r.SecondaryKey == *c.PrimaryKey || r.Module != nil {
		t.Errorf("rotated: got %+v, want the old secondary as primary and a new secondary", r)
	}
	// Tokens are now signed with the new primary, which the hub knew as its secondary.
	tok := e.getToken(mustSign(t, jwt.SigningMethodHS256, e.claims("d1"), secret), nil)
	if tok.JSON200 == nil {
		t.Fatalf("token after rotation: got %d %s", tok.StatusCode(), tok.Body)
	}
	mustVerify(t, tok.JSON200.Token, r.PrimaryKey, signer.KeyBase64, e.clock.Now())

	mresp, err := e.admin.RotateDeviceKeysWithResponse(t.Context(), "d1", oapi.RotateDeviceKeysJSONRequestBody{Module: ptr("m1")})
	if err != nil {
		t.Fatal(err)
	}
	if mresp.JSON200 == nil || deref(mresp.JSON200.Module) != "m1" || mresp.JSON200.PrimaryKey != c.Modules[0].SecondaryKey {
		t.Fatalf("module rotate: got %d %s", mresp.StatusCode(), mresp.Body)
	}
	mtok := e.getToken(mustSign(t, jwt.SigningMethodHS256, e.claims("d1"), secret), &oapi.GetTokenParams{Module: ptr("m1")})
	if mtok.JSON200 == nil {
		t.Fatalf("module token after rotation: got %d %s", mtok.StatusCode(), mtok.Body)
	}
	mustVerify(t, mtok.JSON200.Token, mresp.JSON200.PrimaryKey, signer.KeyBase64, e.clock.Now())
	if strings.Contains(e.logBuf.String(), r.SecondaryKey) || strings.Contains(e.logBuf.String(), mresp.JSON200.SecondaryKey) {
		t.Errorf("a rotated key reached the log")
	}

	snapshot := e.snapshot()
	keysBefore, err := e.store.GetDevice(t.Context(), "d1")
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name, path, body string
		want             int
	}{
		{"unknown device", "/devices/nobody/keys/rotate", "", 404},
		{"unknown module", "/devices/d1/keys/rotate", `{"module":"nope"}`, 404},
		{"policy hub has no device keys", "/devices/p1/keys/rotate", "", 409},
		{"bad module ID", "/devices/d1/keys/rotate", `{"module":"a/b"}`, 400},
		{"unknown field", "/devices/d1/keys/rotate", `{"modul":"m1"}`, 400},
		{"not JSON", "/devices/d1/keys/rotate", `{`, 400},
		{"bad device ID", "/devices/a%2Fb/keys/rotate", "", 400},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			ct := ""
			var body *strings.Reader
			if tt.body != "" {
				ct = "application/json"
			}
			body = strings.NewReader(tt.body)
			resp, b := e.rawRequest(http.MethodPost, tt.path, adminToken, ct, body)
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("got %d %q %s, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), b, tt.want)
			}
			if strings.Contains(string(b), "Key") && strings.Contains(string(b), "=") {
				t.Errorf("refusal may carry a key: %s", b)
			}
		})
	}
	if after := e.snapshot(); after != snapshot {
		t.Errorf("refused rotations changed the store")
	}
	keysAfter, err := e.store.GetDevice(t.Context(), "d1")
	if err != nil {
		t.Fatal(err)
	}
	if keysAfter.PrimaryKey != keysBefore.PrimaryKey || keysAfter.SecondaryKey != keysBefore.SecondaryKey || keysAfter.Modules[0] != keysBefore.Modules[0] {
		t.Errorf("refused rotations changed keys")
	}
}
