package deviceauth

import (
	"reflect"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// refClaims is what golang-jwt's parser decodes an assertion's claims into in the
// reference (compact_test.go): jwt.RegisteredClaims' own field decoders plus the nonce.
type refClaims struct {
	jwt.RegisteredClaims
	Nonce string `json:"nonce,omitempty"`
}

// claimSeeds are claims JSON on both sides of the plain reader's form: duplicates,
// nulls, wrong types, escapes and dates encoding/json accepts or refuses.
var claimSeeds = []string{
	`{"iss":"hs","sub":"hs","aud":"tokensvc","exp":1700000300,"iat":1700000000,"jti":"j1"}`,
	`{"sub":"hs","aud":["a","tokensvc"],"exp":1.7000003005e9,"nbf":"1700000000","nonce":"n"}`,
	`{"aud":[],"exp":null,"iat":-1.5}`,
	`{"exp":1,"exp":null,"aud":"a","aud":null}`,
	`{"EXP":2,"Aud":[null],"ISS":"x"}`,
	`{"aud":[1]}`, `{"aud":{}}`, `{"aud":true}`, `{"exp":"soon"}`, `{"exp":""}`, `{"exp":1e400}`,
	`{"iss":7}`, `{"jti":null,"nonce":null}`, `[]`, `null`, `{"iat":9223372036854775807}`,
	`{"aud":"\u00e9\ud83d\ude42","sub":"a\"b"}`, `{"exp":[1]}`, `{"nbf":{"a":1}}`,
	// An error in an earlier duplicate stops encoding/json even if a later one is good
	// (found by FuzzAssertionLikeJWT).
	`{"sub":"hs","aud":40,"aud":"tokensvc"}`, `{"sub":"hs","exp":1e400,"exp":1}`,
	`{"sub":"hs","aud":[1],"aud":null}`, `{"sub":"hs","exp":"x","exp":2}`,
	`{"sub":"hs","iss":7,"iss":"hs"}`,
}

func sameDate(a, b *jwt.NumericDate) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(b.Time)
}

// sameClaims reports whether got holds the values of want.
func sameClaims(got claims, want refClaims) bool {
	g, w := got.RegisteredClaims, want.RegisteredClaims
	return g.Issuer == w.Issuer && g.Subject == w.Subject && g.ID == w.ID && got.Nonce == want.Nonce &&
		reflect.DeepEqual(g.Audience, w.Audience) &&
		sameDate(g.ExpiresAt, w.ExpiresAt) && sameDate(g.NotBefore, w.NotBefore) && sameDate(g.IssuedAt, w.IssuedAt)
}

// TestClaimsLikeJWT signs each seed and holds checkAssertion to golang-jwt on it.
func TestClaimsLikeJWT(t *testing.T) {
	for _, s := range claimSeeds {
		checkPlainLikeJSON(t, `{"alg":"HS256"}`, s)
		checkLikeJWT(t, signedCompact(t, `{"alg":"HS256"}`, s, 0))
	}
}
