// Package operatorauth authenticates operators and decides what their role allows.
// Two kinds of bearer token are accepted: the static admin token (checked against a
// stored hash, for bootstrap; role admin) and JWTs from an OIDC issuer, verified
// against the issuer's JWKS with pinned algorithms, issuer and audience, whose roles
// claim names the role.
package operatorauth

import (
	"errors"
	"net/http"
	"strings"
)

// Sentinel errors.
var (
	// ErrUnauthenticated means no valid operator credential was presented.
	ErrUnauthenticated = errors.New("operator authentication failed")
	// ErrForbidden means the operator's role does not allow the operation.
	ErrForbidden = errors.New("the operator's role does not allow this operation")
)

// Role is what an operator may do.
type Role string

// Roles, from most to least privileged.
const (
	// RoleAdmin may do everything, admin-token management included.
	RoleAdmin Role = "admin"
	// RoleOperator may manage hubs and devices but not admin tokens.
	RoleOperator Role = "operator"
	// RoleReader may only read (GET, HEAD).
	RoleReader Role = "reader"
)

// rank orders roles; a token naming several gets the highest.
func (r Role) rank() int {
	switch r {
	case RoleAdmin:
		return 3
	case RoleOperator:
		return 2
	case RoleReader:
		return 1
	}
	return 0
}

// Principal is an authenticated operator.
type Principal struct {
	// Subject is "admin" for the static admin token, else the OIDC subject (sub).
	Subject string
	Role    Role
}

// StaticChecker checks the static admin token.
type StaticChecker interface {
	Check(token string) bool
}

// TokenVerifier verifies an OIDC bearer JWT.
type TokenVerifier interface {
	// Verify returns the principal a JWT names; errors wrap ErrUnauthenticated.
	Verify(token string) (Principal, error)
}

// Authenticator accepts the static admin token and, when configured, OIDC JWTs.
type Authenticator struct {
	static StaticChecker
	oidc   TokenVerifier
}

// New returns an Authenticator; static or oidc may be nil to disable that kind.
func New(static StaticChecker, oidc TokenVerifier) *Authenticator {
	return &Authenticator{static: static, oidc: oidc}
}

// Authenticate returns the operator r's bearer token proves; errors wrap
// ErrUnauthenticated. A token with three dot-separated parts is tried as a JWT only
// when OIDC is configured; the static token is always checked in constant time.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	tok := Bearer(r)
	if tok == "" {
		return Principal{}, ErrUnauthenticated
	}
	if a.static != nil && a.static.Check(tok) {
		return Principal{Subject: "admin", Role: RoleAdmin}, nil
	}
	if a.oidc != nil && strings.Count(tok, ".") == 2 {
		return a.oidc.Verify(tok)
	}
	return Principal{}, ErrUnauthenticated
}

// Allow reports whether role may call an operation with the given HTTP method;
// adminOnly marks operations reserved to admins (admin-token management). It returns
// ErrForbidden or nil.
func Allow(role Role, method string, adminOnly bool) error {
	switch {
	case role == RoleAdmin:
		return nil
	case adminOnly:
		return ErrForbidden
	case role == RoleOperator:
		return nil
	case role == RoleReader && (method == http.MethodGet || method == http.MethodHead):
		return nil
	}
	return ErrForbidden
}

// Bearer returns r's bearer token, or "".
func Bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
