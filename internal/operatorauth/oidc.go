package operatorauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// OIDCConfig configures JWT verification.
type OIDCConfig struct {
	// Issuer is the exact iss tokens must carry.
	Issuer string
	// Audience must be one of the token's aud values.
	Audience string
	// JWKSURL is where the keys are; empty discovers it from
	// Issuer/.well-known/openid-configuration.
	JWKSURL string
	// RolesClaim names the claim holding the roles (a string or a list of strings);
	// dots walk into objects, e.g. realm_access.roles. Default "roles".
	RolesClaim string
	// Algorithms are the only JWS algorithms accepted; default RS256 and ES256.
	// HMAC algorithms and none are never accepted.
	Algorithms []string
	// Refresh is how often keys are refetched in the background; default 15 minutes.
	Refresh time.Duration
	// MinRefetch is the least time between fetches caused by an unknown kid; default 30 s.
	MinRefetch time.Duration
	// Leeway tolerates clock skew on exp, nbf and iat; default 30 s.
	Leeway time.Duration
}

// OIDC verifies operator JWTs against an issuer's JWKS. It is safe for concurrent use.
type OIDC struct {
	cfg    OIDCConfig
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	mu        sync.RWMutex
	keys      map[string]crypto.PublicKey
	jwksURL   string
	lastFetch time.Time
	fetchMu   sync.Mutex // one fetch at a time
}

var _ TokenVerifier = (*OIDC)(nil)

// NewOIDC returns a verifier; keys are fetched by Run and on unknown kids. client and
// now default to a 10-second-timeout client and time.Now.
func NewOIDC(cfg OIDCConfig, client *http.Client, now func() time.Time, log *slog.Logger) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("oidc issuer and audience must be set")
	}
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = "roles"
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"RS256", "ES256"}
	}
	for _, a := range cfg.Algorithms {
		if !asymmetric[a] {
			return nil, fmt.Errorf("oidc algorithm %q: want one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA", a)
		}
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 15 * time.Minute
	}
	if cfg.MinRefetch <= 0 {
		cfg.MinRefetch = 30 * time.Second
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &OIDC{cfg: cfg, client: client, now: now, log: log, jwksURL: cfg.JWKSURL}, nil
}

// asymmetric are the algorithms a JWKS can verify; HMAC and none are not among them,
// so a public key can never be used as an HMAC secret.
var asymmetric = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "EdDSA": true,
}

// Run fetches the keys now and every Refresh until ctx ends. Fetch failures are logged
// and retried at the next tick (the keys already held stay in use).
func (o *OIDC) Run(ctx context.Context) error {
	t := time.NewTicker(o.cfg.Refresh)
	defer t.Stop()
	for {
		if err := o.Fetch(ctx); err != nil {
			o.log.Warn("oidc keys not refreshed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Verify implements TokenVerifier.
func (o *OIDC) Verify(token string) (Principal, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, o.keyFor,
		jwt.WithValidMethods(o.cfg.Algorithms),
		jwt.WithIssuer(o.cfg.Issuer),
		jwt.WithAudience(o.cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.cfg.Leeway),
		jwt.WithTimeFunc(o.now),
	)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return Principal{}, fmt.Errorf("%w: token has no sub", ErrUnauthenticated)
	}
	p := Principal{Subject: sub}
	for _, r := range rolesOf(claims, o.cfg.RolesClaim) {
		if role := Role(r); role.rank() > p.Role.rank() {
			p.Role = role
		}
	}
	return p, nil
}

// rolesOf reads a string or list of strings at a dotted claim path or, when the path
// walks to nothing, in the claim named by the whole path: namespaced claims such as
// https://example.com/roles (which Auth0 requires for custom claims) hold dots of their
// own. A path that walks into objects reads as it always did.
func rolesOf(claims jwt.MapClaims, path string) []string {
	var v any = map[string]any(claims)
	for part := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			v = nil
			break
		}
		v = m[part]
	}
	if v == nil {
		v = claims[path]
	}
	switch t := v.(type) {
	case string:
		return strings.Fields(t)
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// keyFor finds the token's key by kid, fetching the JWKS again (at most every
// MinRefetch) when the kid is unknown, e.g. after the issuer rotated its keys.
func (o *OIDC) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if k, ok := o.lookup(kid); ok {
		return k, nil
	}
	// Waits for a fetch already under way (e.g. the first one at start), then looks again.
	o.refetch()
	if k, ok := o.lookup(kid); ok {
		return k, nil
	}
	return nil, fmt.Errorf("no key with kid %q", kid)
}

// refetch fetches the keys unless a fetch started less than MinRefetch ago, so tokens
// with made-up kids cannot make the service hammer the issuer.
func (o *OIDC) refetch() {
	o.fetchMu.Lock()
	defer o.fetchMu.Unlock()
	o.mu.RLock()
	recent := !o.lastFetch.IsZero() && o.now().Sub(o.lastFetch) < o.cfg.MinRefetch
	o.mu.RUnlock()
	if recent {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.fetchLocked(ctx); err != nil {
		o.log.Warn("oidc keys not refreshed", "error", err.Error())
	}
}

func (o *OIDC) lookup(kid string) (crypto.PublicKey, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if kid == "" && len(o.keys) == 1 {
		for _, k := range o.keys {
			return k, true
		}
	}
	k, ok := o.keys[kid]
	return k, ok
}

// Fetch reads the JWKS (after discovery, when no JWKS URL is configured) and replaces
// the keys held.
func (o *OIDC) Fetch(ctx context.Context) error {
	o.fetchMu.Lock()
	defer o.fetchMu.Unlock()
	return o.fetchLocked(ctx)
}

func (o *OIDC) fetchLocked(ctx context.Context) error {
	o.mu.Lock()
	o.lastFetch = o.now()
	url := o.jwksURL
	o.mu.Unlock()
	if url == "" {
		var disc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := o.getJSON(ctx, strings.TrimSuffix(o.cfg.Issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
			return fmt.Errorf("oidc discovery: %w", err)
		}
		if disc.Issuer != o.cfg.Issuer || disc.JWKSURI == "" {
			return fmt.Errorf("oidc discovery: issuer %q and jwks_uri %q, want issuer %q and a jwks_uri", disc.Issuer, disc.JWKSURI, o.cfg.Issuer)
		}
		url = disc.JWKSURI
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := o.getJSON(ctx, url, &set); err != nil {
		return fmt.Errorf("oidc jwks: %w", err)
	}
	keys := make(map[string]crypto.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			o.log.Warn("oidc jwk skipped", "kid", k.Kid, "error", err.Error())
			continue
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return errors.New("oidc jwks: no usable signing keys")
	}
	o.mu.Lock()
	o.keys, o.jwksURL = keys, url
	o.mu.Unlock()
	return nil
}

func (o *OIDC) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// jwk is one JSON Web Key (RFC 7517), public parts only.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding.DecodeString
	switch k.Kty {
	case "RSA":
		n, err1 := b64(k.N)
		e, err2 := b64(k.E)
		if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA parameters")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 {
			return nil, errors.New("RSA key shorter than 2048 bits")
		}
		return pub, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("curve %q", k.Crv)
		}
		x, err1 := b64(k.X)
		y, err2 := b64(k.Y)
		if err := errors.Join(err1, err2); err != nil {
			return nil, errors.New("bad EC parameters")
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("bad EC coordinate length")
		}
		// Uncompressed point encoding, parsed (and checked to be on the curve) by crypto/ecdh's rules.
		pt := append([]byte{4}, append(x, y...)...)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
		if err != nil {
			return nil, fmt.Errorf("EC point: %w", err)
		}
		return pub, nil
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("curve %q", k.Crv)
		}
		x, err := b64(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("key type %q", k.Kty)
}
