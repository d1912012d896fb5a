package deviceauth

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// refClaims is what claims were before they decoded themselves: encoding/json through
// jwt.RegisteredClaims' own field decoders. It is the reference for claims.UnmarshalJSON.
type refClaims struct {
	jwt.RegisteredClaims
	Nonce string `json:"nonce,omitempty"`
}

var claimSeeds = []string{
	`{"iss":"d1","sub":"d1","aud":"tokensvc","exp":1700000300,"iat":1700000000,"jti":"j1"}`,
	`{"sub":"d1","aud":["a","tokensvc"],"exp":1.7000003005e9,"nbf":"1700000000","nonce":"n"}`,
	`{"aud":[],"exp":null,"iat":-1.5}`,
	`{"exp":1,"exp":null,"aud":"a","aud":null}`,
	`{"EXP":2,"Aud":[null],"ISS":"x"}`,
	`{"aud":[1]}`, `{"aud":{}}`, `{"aud":true}`, `{"exp":"soon"}`, `{"exp":""}`, `{"exp":1e400}`,
	`{"iss":7}`, `{"jti":null,"nonce":null}`, `[]`, `null`, `{"iat":9223372036854775807}`,
	`{"aud":"\u00e9\ud83d\ude42","sub":"a\"b"}`, `{"exp":[1]}`, `{"nbf":{"a":1}}`,
}

// decodeBoth decodes s the way golang-jwt does (json.Unmarshal into the Claims value)
// with both types.
func decodeBoth(s string) (got claims, gotErr error, want refClaims, wantErr error) {
	var c jwt.Claims = &got
	gotErr = json.Unmarshal([]byte(s), &c)
	var r jwt.Claims = &want
	wantErr = json.Unmarshal([]byte(s), &r)
	return got, gotErr, want, wantErr
}

func sameDate(a, b *jwt.NumericDate) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(b.Time)
}

func checkSameDecode(t *testing.T, s string) {
	t.Helper()
	got, gotErr, want, wantErr := decodeBoth(s)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s: error %v, reference error %v", s, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if !sameClaims(got, want) {
		t.Fatalf("%s:\n got %+v nonce %q\nwant %+v nonce %q", s, got.RegisteredClaims, got.Nonce, want.RegisteredClaims, want.Nonce)
	}
}

// sameClaims reports whether got holds the values of want.
func sameClaims(got claims, want refClaims) bool {
	g, w := got.RegisteredClaims, want.RegisteredClaims
	return g.Issuer == w.Issuer && g.Subject == w.Subject && g.ID == w.ID && got.Nonce == want.Nonce &&
		reflect.DeepEqual(g.Audience, w.Audience) &&
		sameDate(g.ExpiresAt, w.ExpiresAt) && sameDate(g.NotBefore, w.NotBefore) && sameDate(g.IssuedAt, w.IssuedAt)
}

func TestClaimsDecodeLikeJWT(t *testing.T) {
	for _, s := range claimSeeds {
		checkSameDecode(t, s)
	}
}

// FuzzClaimsDecodeLikeJWT holds the one-pass claims decoder to the reference: the same
// values, and an error exactly when the reference errs.
func FuzzClaimsDecodeLikeJWT(f *testing.F) {
	for _, s := range claimSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSameDecode(t, s) })
}
