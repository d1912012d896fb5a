package deviceauth

import (
	"encoding/json"
	"math"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// claims are an assertion's claims.
type claims struct {
	jwt.RegisteredClaims
	// Nonce is a value from IssueNonce; it stands in for iat/exp on devices without a clock.
	Nonce string `json:"nonce,omitempty"`
	// backing holds what the plain reader (compact.go) points the dates and a
	// one-string audience at, so they take no allocation of their own.
	backing struct {
		dates [3]jwt.NumericDate
		aud   [1]string
	}
}

// wireClaims is the claims' JSON with the dates and audience left undecoded: decoding
// them through jwt.NumericDate and jwt.ClaimStrings runs a nested json.Unmarshal per
// field, a large share of every GET /token. Names match case-insensitively and the last
// duplicate wins, as for any struct encoding/json fills.
type wireClaims struct {
	Issuer    string       `json:"iss"`
	Subject   string       `json:"sub"`
	Audience  rawAudience  `json:"aud"`
	ExpiresAt *json.Number `json:"exp"`
	NotBefore *json.Number `json:"nbf"`
	IssuedAt  *json.Number `json:"iat"`
	ID        string       `json:"jti"`
	Nonce     string       `json:"nonce"`
}

// rawAudience keeps the aud value's JSON; a null leaves an earlier duplicate in place,
// as jwt.ClaimStrings does.
type rawAudience []byte

func (a *rawAudience) UnmarshalJSON(b []byte) error {
	if string(b) != "null" {
		*a = append((*a)[:0], b...)
	}
	return nil
}

// UnmarshalJSON decodes exactly what encoding/json decodes into jwt.RegisteredClaims
// plus the nonce — the same values, and an error for the same inputs (differential
// test: FuzzClaimsDecodeLikeJWT) — in one pass.
func (c *claims) UnmarshalJSON(b []byte) error {
	var w wireClaims
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	aud, err := decodeAudience(w.Audience)
	if err != nil {
		return err
	}
	out := claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: w.Issuer, Subject: w.Subject, Audience: aud, ID: w.ID},
		Nonce:            w.Nonce,
	}
	for _, d := range []struct {
		n   *json.Number
		dst **jwt.NumericDate
	}{{w.ExpiresAt, &out.ExpiresAt}, {w.NotBefore, &out.NotBefore}, {w.IssuedAt, &out.IssuedAt}} {
		if *d.dst, err = numericDate(d.n); err != nil {
			return err
		}
	}
	*c = out
	return nil
}

// numericDate converts as jwt.NumericDate's UnmarshalJSON does; nil is an absent or
// null date.
func numericDate(n *json.Number) (*jwt.NumericDate, error) {
	if n == nil {
		return nil, nil
	}
	d, err := numericDateOf(*n)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// numericDateOf is numericDate's value.
func numericDateOf(n json.Number) (jwt.NumericDate, error) {
	f, err := n.Float64()
	if err != nil {
		return jwt.NumericDate{}, err
	}
	round, frac := math.Modf(f)
	return *jwt.NewNumericDate(time.Unix(int64(round), int64(frac*1e9))), nil
}

// decodeAudience converts as jwt.ClaimStrings' UnmarshalJSON does: a string, an array of
// strings or null; anything else is jwt.ErrInvalidType.
func decodeAudience(raw rawAudience) (jwt.ClaimStrings, error) {
	switch {
	case len(raw) == 0:
		return nil, nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return jwt.ClaimStrings{s}, nil
	case raw[0] == '[':
		var vs []any
		if err := json.Unmarshal(raw, &vs); err != nil {
			return nil, err
		}
		var aud jwt.ClaimStrings
		for _, v := range vs {
			s, ok := v.(string)
			if !ok {
				return nil, jwt.ErrInvalidType
			}
			aud = append(aud, s)
		}
		return aud, nil
	}
	return nil, jwt.ErrInvalidType
}
