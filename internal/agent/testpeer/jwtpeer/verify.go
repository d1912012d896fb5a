package jwtpeer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Reasons the verifier refuses a token (keys of BrokerStats.Refused).
const (
	RefusedMalformed  = "malformed"
	RefusedSignature  = "signature"
	RefusedUnknownKey = "unknown key"
	RefusedExpired    = "expired"
	RefusedIssuer     = "issuer"
	RefusedAudience   = "audience"
	RefusedClientID   = "client id"
	RefusedMethod     = "auth method"
)

// VerifyOptions configure a Verifier.
type VerifyOptions struct {
	// JWKSURL is the issuer's JWKS endpoint, fetched with HTTPClient (nil: the default).
	JWKSURL    string
	HTTPClient *http.Client
	// RefreshInterval is how often the JWKS is fetched again (default 1 min), as EMQX
	// polls it; a token with a kid not in the cached set also triggers a fetch, at most
	// once per RefreshInterval.
	RefreshInterval time.Duration
	// Issuer and Audience are the iss and aud a token must carry.
	Issuer, Audience string
	// ClientIDTemplate is the client ID a token's sub must connect as, with
	// {deviceId} standing for the sub (default "{deviceId}": client ID = sub).
	ClientIDTemplate string
	// Leeway is the clock skew allowed on exp (default none).
	Leeway time.Duration
	// Now is the verifier's clock (default time.Now).
	Now func() time.Time
}

// Verifier checks device JWTs the way a JWT-authenticating broker does: the signature
// against the issuer's published keys (a JWKS fetched over HTTP and cached), a kid
// that names a published key, iss, aud, exp, and a client ID that belongs to the sub.
type Verifier struct {
	o  VerifyOptions
	kf keyfunc.Keyfunc
	p  *jwt.Parser
}

// Verified is what a broker learns from an accepted token.
type Verified struct {
	Subject   string
	ExpiresAt time.Time
	// ACL is the token's acl claim; nil when it has none (everything is allowed).
	ACL    *ACL
	Claims jwt.MapClaims
}

// NewVerifier fetches the JWKS once (failing if it cannot) and keeps refreshing it
// until ctx ends.
func NewVerifier(ctx context.Context, o VerifyOptions) (*Verifier, error) {
	if o.RefreshInterval == 0 {
		o.RefreshInterval = time.Minute
	}
	if o.ClientIDTemplate == "" {
		o.ClientIDTemplate = "{deviceId}"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	fail := false
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{o.JWKSURL}, keyfunc.Override{
		Client:                    o.HTTPClient,
		HTTPTimeout:               5 * time.Second,
		NoErrorReturnFirstHTTPReq: &fail,
		RefreshInterval:           o.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(o.RefreshInterval), 1),
		// Bounds the limiter wait and the refetch together (keyfunc shares one deadline):
		// an exhausted limiter refuses at once, a refetch gets the HTTP timeout.
		RateLimitWaitMax:        5 * time.Second,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) { return func(context.Context, error) {} },
	})
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", o.JWKSURL, err)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{"ES256", "RS256"}),
		jwt.WithIssuer(o.Issuer),
		jwt.WithAudience(o.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.Leeway),
		jwt.WithTimeFunc(o.Now),
	)
	return &Verifier{o: o, kf: kf, p: p}, nil
}

// Verify checks token presented by clientID; reason is "" when it is accepted, else one
// of the Refused constants.
func (v *Verifier) Verify(ctx context.Context, token, clientID string) (Verified, string) {
	var claims jwt.MapClaims
	_, err := v.p.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid == "" {
			return nil, errNoKid // every credential the service signs names its key
		}
		return v.kf.KeyfuncCtx(ctx)(t)
	})
	switch {
	case err == nil:
	case errors.Is(err, keyfunc.ErrKeyfunc), errors.Is(err, jwkset.ErrKeyNotFound), errors.Is(err, errNoKid):
		// No published key by that kid (after a refetch, when the limiter allowed one).
		return Verified{}, RefusedUnknownKey
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return Verified{}, RefusedSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return Verified{}, RefusedExpired
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return Verified{}, RefusedIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return Verified{}, RefusedAudience
	default:
		return Verified{}, RefusedMalformed
	}
	sub, _ := claims["sub"].(string)
	if sub == "" || clientID != strings.ReplaceAll(v.o.ClientIDTemplate, "{deviceId}", sub) {
		return Verified{}, RefusedClientID
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return Verified{}, RefusedMalformed
	}
	out := Verified{Subject: sub, ExpiresAt: exp.Time, Claims: claims}
	if raw, ok := claims["acl"]; ok {
		acl, err := parseACL(raw)
		if err != nil {
			return Verified{}, RefusedMalformed
		}
		out.ACL = acl
	}
	return out, ""
}

var errNoKid = errors.New("token header has no kid")
