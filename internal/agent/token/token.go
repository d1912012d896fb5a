// Package token is the agent's view of a token from GET /token: the service's response
// plus when the agent asked for it, so that lifetimes are measured on the device's own
// clock without trusting that clock's absolute time.
package token

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Token is one response of GET /token and the local time its request was sent.
type Token struct {
	// Response is the service's answer, as the generated client decoded it.
	Response oapi.TokenResponse `json:"response"`
	// RequestedAt is the local clock when the request was sent. The service minted the
	// token after this instant, so RequestedAt plus the lifetime never overestimates
	// the token's life. In memory it carries a monotonic reading; after a reboot only
	// the wall clock remains.
	RequestedAt time.Time `json:"requestedAt"`
	// Key identifies what the token was asked for (service, device, module, transport),
	// so a token persisted for another configuration is never reused.
	Key string `json:"key"`
	// Certificate is set when the credential is a device certificate (POST
	// /token/certificate, hubs in mode certificate): Response then carries its times,
	// hub and profiles, and no token.
	Certificate *Certificate `json:"certificate,omitempty"`
}

// Certificate is a device certificate and where its private key is.
type Certificate struct {
	// PEM is the certificate, Chain the CA chain to the hub's CA (issuing CA first),
	// Serial its serial number (hex).
	PEM    string `json:"pem"`
	Chain  string `json:"chain"`
	Serial string `json:"serial"`
	// KeyFile is the device's private key file (the key never leaves the device).
	KeyFile string `json:"keyFile"`
	// Pair is the certificate and chain with the private key, as TLS presents them; it
	// lives only in memory (the certificate package fills it after a reboot).
	Pair *tls.Certificate `json:"-"`
}

// ClientCertificates are what TLS presents for t: its device certificate, or none.
func (t Token) ClientCertificates() []tls.Certificate {
	if t.Certificate == nil || t.Certificate.Pair == nil {
		return nil
	}
	return []tls.Certificate{*t.Certificate.Pair}
}

// Lifetime is the token's validity as the service counted it (expiresAt - serverTime).
func (t Token) Lifetime() time.Duration {
	return t.Response.ExpiresAt.Sub(t.Response.ServerTime)
}

// ExpiresAt is the token's expiry on the local clock.
func (t Token) ExpiresAt() time.Time {
	return t.RequestedAt.Add(t.Lifetime())
}

// RefreshAt is when the service says to fetch a new token (its refreshAfter), on the
// local clock.
func (t Token) RefreshAt() time.Time {
	return t.RequestedAt.Add(t.Response.RefreshAfter.Sub(t.Response.ServerTime))
}

// Remaining is how long the token stays valid after now (local clock); zero or negative
// once expired.
func (t Token) Remaining(now time.Time) time.Duration {
	return t.ExpiresAt().Sub(now)
}

// Holder keeps the current token and tells waiters when it changes. The zero value is
// empty and ready to use.
type Holder struct {
	mu      sync.Mutex
	cur     Token
	ok      bool
	changed chan struct{}
}

// Set makes t the current token and wakes everyone waiting on a Current channel.
func (h *Holder) Set(t Token) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur, h.ok = t, true
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
}

// Current returns the current token (ok false while there is none) and a channel that
// is closed at the next Set.
func (h *Holder) Current() (t Token, changed <-chan struct{}, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.cur, h.changed, h.ok
}

// Source is where consumers read the current token; *Holder implements it.
type Source interface {
	// Current returns the token (ok false while there is none) and a channel closed
	// when it is replaced.
	Current() (t Token, changed <-chan struct{}, ok bool)
}

var _ Source = (*Holder)(nil)

// Watch calls fn with the current token and then with every new one until ctx ends.
func Watch(ctx context.Context, src Source, fn func(Token)) {
	for {
		t, changed, ok := src.Current()
		if ok {
			fn(t)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// AwaitValid returns the current token once there is one that has not expired by now(),
// with the channel that closes at the next Set; ok is false when ctx ends first. Links
// call it before every connect, so they never dial with a token the hub would refuse.
// It logs once per wait that starts with an expired token.
func AwaitValid(ctx context.Context, current func() (Token, <-chan struct{}, bool), now func() time.Time, log *slog.Logger) (tok Token, changed <-chan struct{}, ok bool) {
	logged := false
	for {
		tok, changed, have := current()
		if have && tok.Remaining(now()) > 0 {
			return tok, changed, true
		}
		if have && !logged {
			log.Warn("token expired; waiting for a new one before connecting")
			logged = true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Token{}, nil, false
		}
	}
}

// Sleep waits d, or until wake closes (nil never does), or ctx ends.
func Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	case <-ctx.Done():
	}
}
