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

// numericDateOf converts n as jwt.NumericDate's UnmarshalJSON does.
func numericDateOf(n json.Number) (jwt.NumericDate, error) {
	f, err := n.Float64()
	if err != nil {
		return jwt.NumericDate{}, err
	}
	round, frac := math.Modf(f)
	return *jwt.NewNumericDate(time.Unix(int64(round), int64(frac*1e9))), nil
}
