package domain

import "fmt"

// PublicError is an error whose message is written for the caller: it names what went
// wrong without internals or key material. Kind is the sentinel it wraps (for
// errors.Is and the HTTP problem table); Public is the message a client may see.
type PublicError struct {
	kind   error
	public string
	full   string
}

// Error returns the whole message, as logged.
func (e *PublicError) Error() string { return e.full }

// Unwrap returns the sentinel.
func (e *PublicError) Unwrap() error { return e.kind }

// Public returns the message a client may see.
func (e *PublicError) Public() string { return e.public }

// Public returns an error of class kind whose message is written for the caller; its
// Error() reads "kind: message".
func Public(kind error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &PublicError{kind: kind, public: msg, full: kind.Error() + ": " + msg}
}

// Describe returns an error of class kind for the record what names (e.g. `device
// "d1"`), reading "what: kind" for client and log alike.
func Describe(what string, kind error) error {
	msg := what + ": " + kind.Error()
	return &PublicError{kind: kind, public: msg, full: msg}
}
