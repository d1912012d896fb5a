package awsauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// ErrUnknownKey means no published issuer key has the token's kid.
var ErrUnknownKey = errors.New("unknown kid")

// KeySource finds the issuer's public key for a JWT; it is given the token with its
// header parsed and a kid present.
type KeySource interface {
	Key(ctx context.Context, t *jwt.Token) (any, error)
}

// NewKeySource returns the KeySource c configures: the JWKS at c.JWKSURL, fetched with
// client (nil: one with a 3 s timeout) and cached, or the keys in c.Keys. ctx ends
// the JWKS refresh.
func NewKeySource(ctx context.Context, c Config, client *http.Client) (KeySource, error) {
	c.defaults()
	if c.JWKSURL != "" {
		if client == nil {
			client = &http.Client{Timeout: 3 * time.Second}
		}
		kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.JWKSURL}, keyfunc.Override{
			Client:          client,
			HTTPTimeout:     3 * time.Second,
			RefreshInterval: c.RefreshKeys,
			// A rotated-in key is published before it signs, so an unknown kid is
			// rare; refetch for it, but at most every RefetchUnknown.
			RefreshUnknownKID:       rate.NewLimiter(rate.Every(c.RefetchUnknown), 1),
			RateLimitWaitMax:        time.Second,
			RefreshErrorHandlerFunc: func(string) func(context.Context, error) { return func(context.Context, error) {} },
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvJWKSURL, err)
		}
		return jwksSource{kf}, nil
	}
	s := strings.TrimSpace(c.Keys)
	if strings.HasPrefix(s, "{") {
		kf, err := keyfunc.NewJWKSetJSON(json.RawMessage(s))
		if err != nil {
			return nil, fmt.Errorf("%s: not a JWK Set: %w", EnvKeys, err)
		}
		return jwksSource{kf}, nil
	}
	return ParsePEMKeys(s)
}

type jwksSource struct{ kf keyfunc.Keyfunc }

func (s jwksSource) Key(ctx context.Context, t *jwt.Token) (any, error) {
	k, err := s.kf.KeyfuncCtx(ctx)(t)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	return k, nil
}

// PEMKeys are public keys by kid.
type PEMKeys map[string]any

// ParsePEMKeys reads PEM "PUBLIC KEY" or "CERTIFICATE" blocks, each with a header
// naming its kid:
//
//	-----BEGIN PUBLIC KEY-----
//	kid: rs256-0123abcd
//
//	MIIBIjANBgkqh…
//	-----END PUBLIC KEY-----
//
// Keys must be RSA (at least 2048 bits) or ECDSA P-256.
func ParsePEMKeys(s string) (PEMKeys, error) {
	keys := PEMKeys{}
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		kid := b.Headers["kid"]
		if kid == "" {
			return nil, fmt.Errorf("%s: a %s block has no kid header", EnvKeys, b.Type)
		}
		var pub any
		switch b.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: key %q does not parse", EnvKeys, kid)
			}
			pub = k
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: certificate %q does not parse", EnvKeys, kid)
			}
			pub = cert.PublicKey
		default:
			return nil, fmt.Errorf("%s: PEM block %q is neither PUBLIC KEY nor CERTIFICATE", EnvKeys, b.Type)
		}
		switch k := pub.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("%s: key %q: RSA keys have at least 2048 bits", EnvKeys, kid)
			}
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("%s: key %q: ECDSA keys are P-256", EnvKeys, kid)
			}
		default:
			return nil, fmt.Errorf("%s: key %q is neither RSA nor ECDSA", EnvKeys, kid)
		}
		if _, dup := keys[kid]; dup {
			return nil, fmt.Errorf("%s: kid %q twice", EnvKeys, kid)
		}
		keys[kid] = pub
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM key found", EnvKeys)
	}
	return keys, nil
}

// Key implements KeySource.
func (p PEMKeys) Key(_ context.Context, t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	k, ok := p[kid]
	if !ok {
		return nil, ErrUnknownKey
	}
	return k, nil
}
