package deviceauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// The reference for checkAssertion is golang-jwt's parser as Verify used it before
// compact.go: these options, refClaims, and a Keyfunc doing what Verify's does.

func referenceParser() *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods(acceptedAlgs),
		jwt.WithoutClaimsValidation(),
		jwt.WithStrictDecoding(),
	)
}

// Test devices by subject: one per algorithm a credential signs with, one that signs
// none (an x509 device), anything else unknown.
var (
	testHS256Secret = []byte("s3cret-s3cret-s3cret")
	testES256Key    = mustECKey()
	testEdKey       = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
)

func mustECKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// testKey is Verify's key lookup over the test devices.
func testKey(method jwt.SigningMethod, crit bool, sub string) (any, error) {
	if crit {
		return nil, errors.New("crit")
	}
	want, key := "", any(nil)
	switch sub {
	case "hs":
		want, key = "HS256", testHS256Secret
	case "es":
		want, key = "ES256", &testES256Key.PublicKey
	case "ed":
		want, key = "EdDSA", testEdKey.Public()
	case "x5":
		return nil, errors.New("credential does not sign assertions")
	default:
		return nil, errors.New("not found")
	}
	if method.Alg() != want {
		return nil, errors.New("alg differs from the credential's")
	}
	return key, nil
}

var errClasses = []error{jwt.ErrTokenMalformed, jwt.ErrTokenUnverifiable, jwt.ErrTokenSignatureInvalid}

// checkLikeJWT runs s through checkAssertion and the reference and fails unless both
// accept or both refuse with the same error class, with the same claims whenever both
// decoded them.
func checkLikeJWT(t *testing.T, s string) error {
	t.Helper()
	var got claims
	gotErr := checkAssertion(s, &got, func(m jwt.SigningMethod, crit bool) (any, error) {
		return testKey(m, crit, got.Subject)
	})
	var want refClaims
	_, wantErr := referenceParser().ParseWithClaims(s, &want, func(tok *jwt.Token) (any, error) {
		_, crit := tok.Header["crit"]
		return testKey(tok.Method, crit, want.Subject)
	})
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: error %v, golang-jwt's %v", s, gotErr, wantErr)
	}
	for _, class := range errClasses {
		if errors.Is(gotErr, class) != errors.Is(wantErr, class) {
			t.Fatalf("%q: error %v, golang-jwt's %v (class %v differs)", s, gotErr, wantErr, class)
		}
	}
	if !errors.Is(gotErr, jwt.ErrTokenMalformed) && !sameClaims(got, want) {
		t.Fatalf("%q: claims\n got %+v nonce %q\nwant %+v nonce %q", s, got.RegisteredClaims, got.Nonce, want.RegisteredClaims, want.Nonce)
	}
	return gotErr
}

var b64 = base64.RawURLEncoding

// signedCompact is header.payload signed by signer (0 HS256, 1 ES256, 2 EdDSA; the
// key of the test device of that algorithm), whatever the header says.
func signedCompact(tb testing.TB, header, payload string, signer byte) string {
	tb.Helper()
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	var (
		sig []byte
		err error
	)
	switch signer % 3 {
	case 0:
		sig, err = jwt.SigningMethodHS256.Sign(input, testHS256Secret)
	case 1:
		sig, err = jwt.SigningMethodES256.Sign(input, testES256Key)
	default:
		sig, err = jwt.SigningMethodEdDSA.Sign(input, testEdKey)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

const plainClaims = `{"iss":"hs","sub":"hs","aud":"tokensvc","exp":1700000300,"iat":1700000000,"jti":"j1"}`

// signedSeeds are (header, claims, signer) for the signed fuzz target and the table.
var signedSeeds = []struct {
	header, claims string
	signer         byte
}{
	{`{"alg":"HS256","typ":"JWT"}`, plainClaims, 0},
	{`{"alg":"ES256","typ":"JWT"}`, strings.ReplaceAll(plainClaims, `"hs"`, `"es"`), 1},
	{`{"alg":"EdDSA","typ":"JWT","kid":"k1"}`, strings.ReplaceAll(plainClaims, `"hs"`, `"ed"`), 2},
	{`{"alg":"none"}`, plainClaims, 0},
	{`{"alg":"HS384"}`, plainClaims, 0},
	{`{"alg":"RS256"}`, plainClaims, 0},
	{`{"alg":"foo"}`, plainClaims, 0},
	{`{"typ":"JWT"}`, plainClaims, 0},
	{`{"alg":null}`, plainClaims, 0},
	{`{"alg":7}`, plainClaims, 0},
	{`{"alg":"HS256","crit":["exp"]}`, plainClaims, 0},
	{`{"alg":"HS256","crit":null}`, plainClaims, 0},
	{`{"alg":"none","alg":"HS256"}`, plainClaims, 0},
	{`{"alg":"HS256","alg":"none"}`, plainClaims, 0},
	{` { "alg" : "HS256" } `, "\t" + plainClaims + "\r\n", 0},
	{`{"alg":"HS\u0032\u0035\u0036"}`, plainClaims, 0},
	{`{"\u0061lg":"HS256"}`, plainClaims, 0},
	{`{"ALG":"HS256"}`, plainClaims, 0},
	{`{"alg":"HS256","x":1e400}`, plainClaims, 0},
	{`{"alg":"HS256","x":[1,{"y":null}]}`, plainClaims, 0},
	{`{"alg":"HS256"}x`, plainClaims, 0},
	{`{"alg":"HS256",}`, plainClaims, 0},
	{`null`, plainClaims, 0},
	{`[]`, plainClaims, 0},
	{``, plainClaims, 0},
	{"{\"alg\":\"HS256\",\"x\":\"\xff\"}", plainClaims, 0},
	// alg confusion: an ES256 device's assertion signed with HMAC, and the reverse.
	{`{"alg":"HS256"}`, strings.ReplaceAll(plainClaims, `"hs"`, `"es"`), 0},
	{`{"alg":"ES256"}`, plainClaims, 1},
	{`{"alg":"EdDSA"}`, plainClaims, 2},
	{`{"alg":"HS256"}`, strings.ReplaceAll(plainClaims, `"hs"`, `"x5"`), 0},
	{`{"alg":"HS256"}`, strings.ReplaceAll(plainClaims, `"hs"`, `"nobody"`), 0},
	// claims
	{`{"alg":"HS256"}`, `{"sub":"hs","sub":"es"}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"es","SUB":"hs"}`, 0},
	{`{"alg":"HS256"}`, `{"ſub":"hs"}`, 0},
	{`{"alg":"HS256"}`, `{"Sub":"hs","Aud":["a","b"],"EXP":1,"iaT":null,"nonce":"n"}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"h\u0073"}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","exp":1e400}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","exp":9223372036854775807,"iat":-1.5,"nbf":0.000001}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","exp":"1700000000"}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","exp":01}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","exp":1.}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","exp":-}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","x":1e999,"y":{"z":[true]}}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","aud":[]}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","aud":[null]}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","aud":["a",1]}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","aud":null,"jti":null}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","iss":7}`, 0},
	{`{"alg":"HS256"}`, `{"sub":"hs","jti":"\ud83d\ude42 \ud800"}`, 0},
	{`{"alg":"HS256"}`, "{\"sub\":\"hs\",\"jti\":\"\xc3\x28\"}", 0},
	{`{"alg":"HS256"}`, `{"sub":"hs"} {}`, 0},
	{`{"alg":"HS256"}`, `null`, 0},
	{`{"alg":"HS256"}`, `[]`, 0},
	{`{"alg":"HS256"}`, `{}`, 0},
}

// TestPlainFormRead: the assertions devices send are read without encoding/json.
func TestPlainFormRead(t *testing.T) {
	for _, s := range signedSeeds[:3] {
		if _, _, _, ok := readPlainHeader([]byte(s.header)); !ok {
			t.Errorf("header %s: not read as plain", s.header)
		}
		var c claims
		if !readPlainClaims([]byte(s.claims), &c) {
			t.Errorf("claims %s: not read as plain", s.claims)
		}
	}
}

// rawSeeds are unsigned or damaged compact forms.
func rawSeeds(tb testing.TB) []string {
	good := signedCompact(tb, signedSeeds[0].header, signedSeeds[0].claims, 0)
	h, rest, _ := strings.Cut(good, ".")
	p, sig, _ := strings.Cut(rest, ".")
	last := sig[len(sig)-1]
	tweaked := sig[:len(sig)-1] + string(last^1) // other unused bits: not canonical
	return []string{
		good, "", ".", "..", "...", good + ".", h + "." + p, h + "." + p + ".",
		h + "=." + p + "." + sig, h + "." + p + "." + sig + "=", h + "." + p + "." + tweaked,
		h[:5] + "\n" + h[5:] + "." + p + "." + sig, h + "." + p + "\r." + sig,
		h + "." + p + "." + sig[:10], "e30." + p + "." + sig, h + ".e30." + sig,
		h + "." + p + "." + sig + "A", strings.ReplaceAll(good, "_", "/"),
		b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + p + ".",
		strings.Repeat("a", 5000) + "." + p + "." + sig,
		h + "." + strings.Repeat("e30", 2000) + "." + sig,
	}
}

// checkPlainLikeJSON fails when the plain readers accept header or claims and read
// them otherwise than encoding/json (readHeader's and readClaims' fallbacks).
func checkPlainLikeJSON(t *testing.T, header, payload string) {
	t.Helper()
	if alg, hasAlg, crit, ok := readPlainHeader([]byte(header)); ok {
		var h map[string]any
		if err := json.Unmarshal([]byte(header), &h); err != nil {
			t.Fatalf("header %q: plain reader accepts, encoding/json: %v", header, err)
		}
		wantAlg, wantHasAlg := h["alg"].(string)
		_, wantCrit := h["crit"]
		if alg != wantAlg || hasAlg != wantHasAlg || crit != wantCrit {
			t.Fatalf("header %q: plain reader alg %q %v crit %v, encoding/json alg %q %v crit %v", header, alg, hasAlg, crit, wantAlg, wantHasAlg, wantCrit)
		}
	}
	var got claims
	if readPlainClaims([]byte(payload), &got) {
		var want refClaims
		var jc jwt.Claims = &want
		if err := json.Unmarshal([]byte(payload), &jc); err != nil {
			t.Fatalf("claims %q: plain reader accepts, encoding/json: %v", payload, err)
		}
		if !sameClaims(got, want) {
			t.Fatalf("claims %q: plain reader %+v, encoding/json %+v", payload, got, want)
		}
	}
}

func TestCheckAssertionLikeJWT(t *testing.T) {
	for _, s := range signedSeeds {
		checkPlainLikeJSON(t, s.header, s.claims)
		checkLikeJWT(t, signedCompact(t, s.header, s.claims, s.signer))
	}
	for _, s := range rawSeeds(t) {
		checkLikeJWT(t, s)
	}
}

// TestCheckAssertionOutcomes pins the outcomes that matter for security, beyond being
// golang-jwt's.
func TestCheckAssertionOutcomes(t *testing.T) {
	es := strings.ReplaceAll(plainClaims, `"hs"`, `"es"`)
	ed := strings.ReplaceAll(plainClaims, `"hs"`, `"ed"`)
	pubPEMAsSecret := func() string {
		// HS256 keyed with what an ES256 device publishes: refused, the alg is pinned.
		input := b64.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." + b64.EncodeToString([]byte(es))
		sig, err := jwt.SigningMethodHS256.Sign(input, []byte("public key bytes"))
		if err != nil {
			t.Fatal(err)
		}
		return input + "." + b64.EncodeToString(sig)
	}
	tests := []struct {
		name      string
		assertion string
		want      error // nil: accepted
	}{
		{"HS256", signedCompact(t, `{"alg":"HS256","typ":"JWT"}`, plainClaims, 0), nil},
		{"ES256", signedCompact(t, `{"alg":"ES256"}`, es, 1), nil},
		{"EdDSA", signedCompact(t, `{"alg":"EdDSA"}`, ed, 2), nil},
		{"none", b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + b64.EncodeToString([]byte(plainClaims)) + ".", jwt.ErrTokenSignatureInvalid},
		{"HS384 not accepted", signedCompact(t, `{"alg":"HS384"}`, plainClaims, 0), jwt.ErrTokenSignatureInvalid},
		{"unknown alg", signedCompact(t, `{"alg":"foo"}`, plainClaims, 0), jwt.ErrTokenUnverifiable},
		{"no alg", signedCompact(t, `{}`, plainClaims, 0), jwt.ErrTokenUnverifiable},
		{"crit", signedCompact(t, `{"alg":"HS256","crit":["b64"]}`, plainClaims, 0), jwt.ErrTokenUnverifiable},
		{"HS256 for an ES256 device", pubPEMAsSecret(), jwt.ErrTokenUnverifiable},
		{"ES256 header, HMAC signature", signedCompact(t, `{"alg":"ES256"}`, es, 0), jwt.ErrTokenSignatureInvalid},
		{"wrong key", signedCompact(t, `{"alg":"HS256"}`, plainClaims, 2), jwt.ErrTokenSignatureInvalid},
		{"padded", signedCompact(t, `{"alg":"HS256"}`, plainClaims, 0) + "=", jwt.ErrTokenMalformed},
		{"four segments", signedCompact(t, `{"alg":"HS256"}`, plainClaims, 0) + ".x", jwt.ErrTokenMalformed},
		{"claims not JSON", signedCompact(t, `{"alg":"HS256"}`, `{"sub":"hs"`, 0), jwt.ErrTokenMalformed},
		{"huge date", signedCompact(t, `{"alg":"HS256"}`, `{"sub":"hs","exp":1e400}`, 0), jwt.ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkLikeJWT(t, tt.assertion)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzAssertionLikeJWT holds checkAssertion to golang-jwt's parser on any string.
func FuzzAssertionLikeJWT(f *testing.F) {
	for _, s := range signedSeeds {
		f.Add(signedCompact(f, s.header, s.claims, s.signer))
	}
	for _, s := range rawSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkLikeJWT(t, s) })
}

// FuzzSignedAssertionLikeJWT holds checkAssertion to golang-jwt's parser on any header
// and claims bytes, signed with a test device's key, so the fuzzer reaches past the
// signature with any JSON.
func FuzzSignedAssertionLikeJWT(f *testing.F) {
	for _, s := range signedSeeds {
		f.Add(s.header, s.claims, s.signer)
	}
	for _, s := range claimSeeds {
		f.Add(`{"alg":"HS256"}`, s, byte(0))
	}
	f.Fuzz(func(t *testing.T, header, payload string, signer byte) {
		checkPlainLikeJSON(t, header, payload)
		checkLikeJWT(t, signedCompact(t, header, payload, signer))
	})
}
