package awsauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Reasons a request is refused, as logged (never with the token).
var (
	ErrNoToken      = errors.New("no token in the request")
	ErrBadToken     = errors.New("token does not verify")
	ErrClientID     = errors.New("MQTT client ID is not the token's subject")
	ErrSubject      = errors.New("token subject is not a device ID AWS policies take literally")
	ErrPolicyLimits = errors.New("the device's policy exceeds AWS's limits")
)

// maxTokenLen bounds the token the authorizer parses; tokensvc's JWTs are well under.
const maxTokenLen = 8192

// Algorithms are the JWT algorithms of tokensvc's issuer keys; no other is accepted.
var Algorithms = []string{"RS256", "ES256"}

// Authorizer decides custom authorizer requests.
type Authorizer struct {
	c    Config
	keys KeySource
	now  func() time.Time
	log  *slog.Logger
}

// New returns an Authorizer for c (validated) with keys, reading time from now (nil:
// time.Now) and logging decisions to log (nil: slog.Default()).
func New(c Config, keys KeySource, now func() time.Time, log *slog.Logger) (*Authorizer, error) {
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Authorizer{c: c, keys: keys, now: now, log: log}, nil
}

// Handle answers one request. It never returns an error: a request it cannot accept is
// answered with isAuthenticated false, so AWS IoT Core refuses the connection.
func (a *Authorizer) Handle(ctx context.Context, r Request) (Response, error) {
	res, sub, err := a.authorize(ctx, r)
	if err != nil {
		// The client ID is the device's claim, not a secret; the token never appears.
		a.log.WarnContext(ctx, "connection refused", "connection", r.ConnectionMetadata.ID,
			"protocols", r.Protocols, "clientId", clientID(r), "reason", err.Error())
		return Response{IsAuthenticated: false}, nil
	}
	a.log.InfoContext(ctx, "connection authorized", "connection", r.ConnectionMetadata.ID,
		"protocols", r.Protocols, "device", sub, "disconnectAfter", res.DisconnectAfterInSeconds)
	return res, nil
}

func (a *Authorizer) authorize(ctx context.Context, r Request) (res Response, sub string, err error) {
	defer func() {
		// A panic would fail the invocation; AWS would refuse anyway, but say why.
		if p := recover(); p != nil {
			res, sub, err = Response{}, "", fmt.Errorf("internal error: %v", p)
		}
	}()
	tok := a.token(r)
	if tok == "" {
		return Response{}, "", ErrNoToken
	}
	if len(tok) > maxTokenLen {
		return Response{}, "", fmt.Errorf("%w: longer than %d bytes", ErrBadToken, maxTokenLen)
	}
	now := a.now()
	claims := &jwt.RegisteredClaims{}
	_, err = jwt.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit header names extensions this verifier does not implement")
		}
		if kid, ok := t.Header["kid"].(string); !ok || kid == "" {
			return nil, errors.New("no kid")
		}
		return a.keys.Key(ctx, t)
	}, jwt.WithValidMethods(Algorithms), jwt.WithIssuer(a.c.Issuer), jwt.WithAudience(a.c.Endpoint),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(a.c.Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return Response{}, "", fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	sub = claims.Subject
	if !domain.ValidID(sub) || strings.ContainsAny(sub, "*?$") {
		return Response{}, "", ErrSubject
	}
	if m := r.ProtocolData.MQTT; m != nil || slices.Contains(r.Protocols, "mqtt") {
		// A device connects as itself only: the client ID must be the token's subject.
		if m == nil || m.ClientID != sub {
			return Response{}, "", ErrClientID
		}
	}
	docs, err := PolicyDocuments(a.c.Statements(sub))
	if err != nil {
		return Response{}, "", fmt.Errorf("%w: %v", ErrPolicyLimits, err)
	}
	// The connection lives as long as the token, within AWS's bounds; at the refresh
	// AWS IoT Core asks again, and an expired token is refused then.
	left := int(claims.ExpiresAt.Sub(now) / time.Second)
	secs := clamp(left, a.c.MinSeconds, a.c.MaxSeconds)
	return Response{
		IsAuthenticated:          true,
		PrincipalID:              PrincipalID(sub),
		PolicyDocuments:          docs,
		DisconnectAfterInSeconds: secs,
		RefreshAfterInSeconds:    secs,
	}, sub, nil
}

// token returns the token from where AWS IoT Core puts it: the event's token (AWS
// extracted it by the token key name), the MQTT user name's query string, an HTTP
// header or query parameter, or else the MQTT password (authorizers without signing).
func (a *Authorizer) token(r Request) string {
	if r.Token != "" {
		return r.Token
	}
	key := a.c.TokenKeyName
	if m := r.ProtocolData.MQTT; m != nil {
		if _, q, ok := strings.Cut(m.Username, "?"); ok {
			if v, err := url.ParseQuery(q); err == nil && v.Get(key) != "" {
				return v.Get(key)
			}
		}
	}
	if h := r.ProtocolData.HTTP; h != nil {
		for name, v := range h.Headers {
			if strings.EqualFold(name, key) && v != "" {
				return v
			}
		}
		if v, err := url.ParseQuery(strings.TrimPrefix(h.QueryString, "?")); err == nil && v.Get(key) != "" {
			return v.Get(key)
		}
	}
	if m := r.ProtocolData.MQTT; m != nil && m.Password != "" {
		if b, err := base64.StdEncoding.DecodeString(m.Password); err == nil {
			return string(b)
		}
	}
	return ""
}

// clientID is the request's MQTT client ID for logs, cut to AWS's 128-character limit.
func clientID(r Request) string {
	if m := r.ProtocolData.MQTT; m != nil {
		id := m.ClientID
		if len(id) > 128 {
			id = id[:128]
		}
		return id
	}
	return ""
}
