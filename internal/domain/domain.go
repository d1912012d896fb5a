// Package domain owns tokensvc's records — hubs (the targets tokens are minted for),
// devices, modules and their credentials — and the rules that belong to them: which
// identifiers are valid, how credentials are parsed and pinned to one algorithm, and
// which hub settings every kind shares. Adapters (the stores, the HTTP API, the CLI)
// translate to and from these types; they do not make these rules up again.
package domain

import "errors"

// ErrInvalid means a request breaks a rule; its message says which and is safe to show
// the caller (it never holds key material).
var ErrInvalid = errors.New("invalid")

// Invalid returns an error wrapping ErrInvalid with a client-safe message.
func Invalid(format string, args ...any) error {
	return Public(ErrInvalid, format, args...)
}
