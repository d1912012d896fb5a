package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"hash"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AssertionLifetime is exp - iat of every assertion the tool signs (the verifier allows
// at most 5 minutes).
const AssertionLifetime = 120 * time.Second

var (
	// hs256Header is base64url({"alg":"HS256","typ":"JWT"}).
	hs256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	// es256Header is base64url({"alg":"ES256","typ":"JWT"}).
	es256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`))
)

// appendSigningInput appends header.claims (the JWS signing input) for an assertion of
// deviceID at now with the claims tokensvc's verifier wants: iss = sub = device ID,
// aud, iat, exp (iat + AssertionLifetime) and jti = jtiPrefix + seq in base 36. The
// assertions are built by hand: the generator runs on the same cores as the service,
// so it should spend as little CPU as it can.
func appendSigningInput(dst, scratch []byte, header, deviceID, audience, jtiPrefix string, seq uint64, now time.Time) (out, claims []byte) {
	iat := now.Unix()
	c := scratch[:0]
	c = append(c, `{"iss":`...)
	c = strconv.AppendQuote(c, deviceID)
	c = append(c, `,"sub":`...)
	c = strconv.AppendQuote(c, deviceID)
	c = append(c, `,"aud":`...)
	c = strconv.AppendQuote(c, audience)
	c = append(c, `,"iat":`...)
	c = strconv.AppendInt(c, iat, 10)
	c = append(c, `,"exp":`...)
	c = strconv.AppendInt(c, iat+int64(AssertionLifetime/time.Second), 10)
	c = append(c, `,"jti":"`...)
	c = append(c, jtiPrefix...)
	c = strconv.AppendUint(c, seq, 36)
	c = append(c, `"}`...)
	dst = append(dst, header...)
	dst = append(dst, '.')
	return base64.RawURLEncoding.AppendEncode(dst, c), c
}

// Device is one simulated HS256 device: its ID and the secret's text.
type Device struct {
	ID     string
	Secret string
}

// Signer builds HS256 device assertions with a jti unique to the signer. One signer
// per worker; it is not safe for concurrent use.
type Signer struct {
	audience string
	prefix   string // per-worker jti prefix
	seq      uint64
	buf      []byte
	macs     map[string]hash.Hash // per device secret
}

// NewSigner is a Signer for audience whose jtis start with jtiPrefix.
func NewSigner(audience, jtiPrefix string) *Signer {
	return &Signer{audience: audience, prefix: jtiPrefix, macs: map[string]hash.Hash{}}
}

// Sign returns a fresh assertion for d at now.
func (s *Signer) Sign(d Device, now time.Time) string {
	s.seq++
	out, claims := appendSigningInput(make([]byte, 0, 256), s.buf, hs256Header, d.ID, s.audience, s.prefix, s.seq, now)
	s.buf = claims
	mac, ok := s.macs[d.Secret]
	if !ok {
		mac = hmac.New(sha256.New, []byte(d.Secret))
		s.macs[d.Secret] = mac
	}
	mac.Reset()
	mac.Write(out)
	var sum [sha256.Size]byte
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, mac.Sum(sum[:0]))
	return string(out)
}

// KeyDevice is a simulated device that signs ES256 assertions with its own P-256 key.
// The private key lives in this process only; the service gets the public key.
type KeyDevice struct {
	ID  string
	Key *ecdsa.PrivateKey
}

// NewKeyDevice generates a P-256 key for id.
func NewKeyDevice(id string) (KeyDevice, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyDevice{}, fmt.Errorf("generate key for %s: %w", id, err)
	}
	return KeyDevice{ID: id, Key: k}, nil
}

// GenerateKeyDevices makes n ES256 devices named prefix000000… with fresh P-256 keys,
// spread over the CPUs.
func GenerateKeyDevices(prefix string, n int) ([]KeyDevice, error) {
	devs := make([]KeyDevice, n)
	workers := max(runtime.GOMAXPROCS(0), 1)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				d, err := NewKeyDevice(fmt.Sprintf("%s%06d", prefix, i))
				if err != nil {
					errs[w] = err
					return
				}
				devs[i] = d
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return devs, nil
}

// PublicKeyPEM is the device's public key as the operator API takes it (PEM PKIX).
func (d KeyDevice) PublicKeyPEM() (string, error) {
	der, err := x509.MarshalPKIXPublicKey(&d.Key.PublicKey)
	if err != nil {
		return "", fmt.Errorf("marshal public key of %s: %w", d.ID, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// Sign returns a compact ES256 JWT for d with jti jtiPrefix + seq (base 36), signed at
// now.
func (d KeyDevice) Sign(audience, jtiPrefix string, seq uint64, now time.Time) (string, error) {
	out, _ := appendSigningInput(make([]byte, 0, 384), nil, es256Header, d.ID, audience, jtiPrefix, seq, now)
	// golang-jwt writes the JWS form of the signature (r || s, 32 bytes each).
	sig, err := jwt.SigningMethodES256.Sign(string(out), d.Key)
	if err != nil {
		return "", fmt.Errorf("sign assertion for %s: %w", d.ID, err)
	}
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, sig)
	return string(out), nil
}
