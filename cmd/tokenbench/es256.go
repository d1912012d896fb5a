package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// es256Header is base64url({"alg":"ES256","typ":"JWT"}).
var es256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`))

// assertionLifetime is exp - iat of every assertion the tool signs (the verifier allows
// at most 5 minutes).
const assertionLifetime = 120 * time.Second

// keyDevice is a simulated device that signs ES256 assertions with its own P-256 key.
// The private key lives in this process only; the service gets the public key.
type keyDevice struct {
	ID  string
	Key *ecdsa.PrivateKey
}

// newKeyDevice generates a P-256 key for id.
func newKeyDevice(id string) (keyDevice, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyDevice{}, fmt.Errorf("generate key for %s: %w", id, err)
	}
	return keyDevice{ID: id, Key: k}, nil
}

// publicKeyPEM is the device's public key as the operator API takes it (PEM PKIX).
func (d keyDevice) publicKeyPEM() (string, error) {
	der, err := x509.MarshalPKIXPublicKey(&d.Key.PublicKey)
	if err != nil {
		return "", fmt.Errorf("marshal public key of %s: %w", d.ID, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// claimsJSON appends the assertion claims tokensvc's verifier wants: iss = sub = device
// ID, aud, iat, exp (iat + assertionLifetime) and a jti.
func claimsJSON(dst []byte, deviceID, audience, jti string, now time.Time) []byte {
	iat := now.Unix()
	dst = append(dst, `{"iss":`...)
	dst = strconv.AppendQuote(dst, deviceID)
	dst = append(dst, `,"sub":`...)
	dst = strconv.AppendQuote(dst, deviceID)
	dst = append(dst, `,"aud":`...)
	dst = strconv.AppendQuote(dst, audience)
	dst = append(dst, `,"iat":`...)
	dst = strconv.AppendInt(dst, iat, 10)
	dst = append(dst, `,"exp":`...)
	dst = strconv.AppendInt(dst, iat+int64(assertionLifetime/time.Second), 10)
	dst = append(dst, `,"jti":`...)
	dst = strconv.AppendQuote(dst, jti)
	return append(dst, '}')
}

// signES256 returns a compact ES256 JWT for d with the given jti, signed at now.
func signES256(d keyDevice, audience, jti string, now time.Time) (string, error) {
	c := claimsJSON(nil, d.ID, audience, jti, now)
	out := make([]byte, 0, len(es256Header)+1+base64.RawURLEncoding.EncodedLen(len(c))+1+86)
	out = append(out, es256Header...)
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, c)
	// golang-jwt writes the JWS form of the signature (r || s, 32 bytes each).
	sig, err := jwt.SigningMethodES256.Sign(string(out), d.Key)
	if err != nil {
		return "", fmt.Errorf("sign assertion for %s: %w", d.ID, err)
	}
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, sig)
	return string(out), nil
}
