package httpapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/store"
)

// publicMaxAge is how long brokers and proxies may cache the published keys. A new
// key is published for longer than this before it signs (the key ring's publication
// lead), so a cached key set always knows the key of any credential a device shows.
const publicMaxAge = "public, max-age=300"

// IssuerKeys is the service's issuer key ring as the API publishes and rotates it.
type IssuerKeys interface {
	// Keys returns every key the ring holds, newest first, with the ring's clock
	// reading (to tell published keys from expired ones).
	Keys(ctx context.Context) ([]domain.IssuerKey, time.Time, error)
	// Rotate creates the next key of alg; errors wrap domain.ErrInvalid for a bad
	// algorithm, store.ErrUnavailable when the key store cannot be reached.
	Rotate(ctx context.Context, alg domain.IssuerAlg) (domain.IssuerKey, error)
}

// published returns the keys in the published set.
func (s *Server) published(ctx context.Context) ([]domain.IssuerKey, error) {
	if s.deps.Keys == nil {
		return nil, nil
	}
	keys, now, err := s.deps.Keys.Keys(ctx)
	if err != nil {
		return nil, err
	}
	out := keys[:0:0]
	for _, k := range keys {
		if k.Published(now) {
			out = append(out, k)
		}
	}
	return out, nil
}

// publishedKey returns the published key kid, or a not-found error.
func (s *Server) publishedKey(ctx context.Context, kid string) (domain.IssuerKey, error) {
	keys, err := s.published(ctx)
	if err != nil {
		return domain.IssuerKey{}, err
	}
	for _, k := range keys {
		if k.ID == kid {
			return k, nil
		}
	}
	return domain.IssuerKey{}, store.Describe(fmt.Sprintf("issuer key %q", kid), store.ErrNotFound)
}

// GetJwks serves the published keys as a JWK set.
func (s *Server) GetJwks(ctx context.Context, _ oapiserver.GetJwksRequestObject) (oapiserver.GetJwksResponseObject, error) {
	keys, err := s.published(ctx)
	if err != nil {
		return nil, err
	}
	set := oapi.Jwks{Keys: make([]oapi.Jwk, 0, len(keys))}
	for _, k := range keys {
		if j, ok := jwkOf(k); ok {
			set.Keys = append(set.Keys, j)
		}
	}
	cc := publicMaxAge
	return oapiserver.GetJwks200JSONResponse{Body: set, Headers: oapiserver.GetJwks200ResponseHeaders{CacheControl: &cc}}, nil
}

// GetIssuerPublicKey serves one published key as a PEM public key.
func (s *Server) GetIssuerPublicKey(ctx context.Context, req oapiserver.GetIssuerPublicKeyRequestObject) (oapiserver.GetIssuerPublicKeyResponseObject, error) {
	k, err := s.publishedKey(ctx, req.Kid)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		return nil, fmt.Errorf("issuer key %q: %w", k.ID, err)
	}
	body := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	cc := publicMaxAge
	return oapiserver.GetIssuerPublicKey200ApplicationxPemFileResponse{
		Body: bytes.NewReader(body), ContentLength: int64(len(body)),
		Headers: oapiserver.GetIssuerPublicKey200ResponseHeaders{CacheControl: &cc},
	}, nil
}

// GetIssuerCertificate serves one published key's self-signed certificate.
func (s *Server) GetIssuerCertificate(ctx context.Context, req oapiserver.GetIssuerCertificateRequestObject) (oapiserver.GetIssuerCertificateResponseObject, error) {
	k, err := s.publishedKey(ctx, req.Kid)
	if err != nil {
		return nil, err
	}
	if len(k.Certificate) == 0 {
		return nil, fmt.Errorf("issuer key %q has no certificate", k.ID)
	}
	body := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Certificate})
	cc := publicMaxAge
	return oapiserver.GetIssuerCertificate200ApplicationxPemFileResponse{
		Body: bytes.NewReader(body), ContentLength: int64(len(body)),
		Headers: oapiserver.GetIssuerCertificate200ResponseHeaders{CacheControl: &cc},
	}, nil
}

// ListIssuerKeys lists every key with its state.
func (s *Server) ListIssuerKeys(ctx context.Context, _ oapiserver.ListIssuerKeysRequestObject) (oapiserver.ListIssuerKeysResponseObject, error) {
	out := oapiserver.ListIssuerKeys200JSONResponse{Items: []oapi.IssuerKey{}}
	if s.deps.Keys == nil {
		return out, nil
	}
	keys, now, err := s.deps.Keys.Keys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		out.Items = append(out.Items, issuerKeyToAPI(k, now))
	}
	return out, nil
}

// RotateIssuerKey creates the next key of an algorithm.
func (s *Server) RotateIssuerKey(ctx context.Context, req oapiserver.RotateIssuerKeyRequestObject) (oapiserver.RotateIssuerKeyResponseObject, error) {
	if s.deps.Keys == nil {
		return nil, domain.Invalid("this service has no issuer keys")
	}
	k, err := s.deps.Keys.Rotate(ctx, domain.IssuerAlg(req.Body.Alg))
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "issuer key created", "kid", k.ID, "alg", k.Alg, "signsFrom", k.SignsFrom)
	return oapiserver.RotateIssuerKey201JSONResponse(issuerKeyToAPI(k, k.CreatedAt)), nil
}

func issuerKeyToAPI(k domain.IssuerKey, now time.Time) oapi.IssuerKey {
	out := oapi.IssuerKey{
		Kid:       k.ID,
		Alg:       oapi.IssuerKeyAlgorithm(k.Alg),
		State:     oapi.IssuerKeyState(k.State(now)),
		CreatedAt: k.CreatedAt,
		SignsFrom: k.SignsFrom,
		Transit:   ptrIfSet(k.Transit),
	}
	if !k.RetiredAt.IsZero() {
		out.RetiredAt = &k.RetiredAt
	}
	if !k.PublishedUntil.IsZero() {
		out.PublishedUntil = &k.PublishedUntil
	}
	return out
}

// jwkOf returns k as a public JWK (RFC 7517/7518); false for a key type it cannot say.
func jwkOf(k domain.IssuerKey) (oapi.Jwk, bool) {
	b64 := base64.RawURLEncoding.EncodeToString
	j := oapi.Jwk{Kid: k.ID, Use: oapi.Sig, Alg: oapi.JwkAlg(k.Alg)}
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		n, e := b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
		j.Kty, j.N, j.E = oapi.RSA, &n, &e
	case *ecdsa.PublicKey:
		raw, err := pub.Bytes() // uncompressed point: 0x04 || X || Y
		if err != nil || len(raw) != 65 {
			return oapi.Jwk{}, false
		}
		x, y, crv := b64(raw[1:33]), b64(raw[33:]), oapi.P256
		j.Kty, j.Crv, j.X, j.Y = oapi.EC, &crv, &x, &y
	default:
		return oapi.Jwk{}, false
	}
	return j, true
}
