package operatorauth

import (
	"encoding/json"
	"testing"
)

// FuzzJWK holds the JWK parser to never panic on what an issuer (or someone between it
// and us) might serve, and to return a key only with no error.
func FuzzJWK(f *testing.F) {
	for _, seed := range []string{
		`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`,
		`{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4","e":"AQAB"}`,
		`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		`{"kty":"EC","crv":"P-521","x":"","y":""}`,
		`{"kty":"RSA","n":"AA","e":"AQABAQAB"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var k jwk
		if json.Unmarshal(b, &k) != nil {
			return
		}
		pub, err := k.publicKey()
		if (pub == nil) == (err == nil) {
			t.Fatalf("got key %v and error %v; want exactly one", pub, err)
		}
	})
}
