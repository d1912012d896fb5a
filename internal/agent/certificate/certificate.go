// Package certificate is the agent's certificate mode (hubs in mode certificate): the
// device's private key is made on the device and never sent (created once, 0600, and
// reused for every renewal, so the key file and each certificate file are always a
// matching pair for software that reads them); each renewal sends a CSR for it to POST
// /token/certificate through fetch.Client, with the same assertion, nonce and clock
// handling as a token fetch; the answer becomes a token.Token carrying the certificate,
// so the keeper renews it at refreshAfter with the token backoff rules and persists it,
// the links present it (and reconnect with each new one), and the sinks write it.
package certificate

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Client asks the service for certificates; *fetch.Client implements it.
type Client interface {
	// Certificate sends a CSR and returns the answer and when its request was sent;
	// errors are *fetch.Error values.
	Certificate(ctx context.Context, csrPEM string) (oapi.CertificateResponse, time.Time, error)
	// CertificateKey identifies what the client asks for.
	CertificateKey() string
}

var _ Client = (*fetch.Client)(nil)

// Options configure a Fetcher.
type Options struct {
	Client Client
	// KeyFile is the device's private key; it is created with KeyType when missing.
	KeyFile string
	KeyType KeyType
	// DeviceID (and Module) name the CSR's subject; the service sets the certificate's
	// subject itself, whatever the CSR asks.
	DeviceID, Module string
	Logger           *slog.Logger
}

// ErrMismatch means a certificate is not for the device's key: the service answered
// for another key, or a saved certificate predates the key file.
var ErrMismatch = errors.New("certificate is not for the device's private key")

// Fetcher gets device certificates as tokens; it implements keeper.Fetcher.
type Fetcher struct {
	o   Options
	key crypto.Signer
	csr string
	// keyName is the key's fingerprint, part of Key: a certificate saved for another
	// key is never reused.
	keyName string
}

// New loads the device's private key (creating it when missing) and prepares its CSR.
func New(o Options) (*Fetcher, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	key, created, err := LoadOrCreateKey(o.KeyFile, o.KeyType)
	if err != nil {
		return nil, err
	}
	name := Fingerprint(key.Public())
	if created {
		o.Logger.Info("device private key created", "path", o.KeyFile, "type", string(o.KeyType), "publicKeySHA256", name)
	}
	cn := o.DeviceID
	if o.Module != "" {
		cn += "/" + o.Module
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate signing request: %w", err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	return &Fetcher{o: o, key: key, csr: csr, keyName: name}, nil
}

// Key identifies what the Fetcher asks for: the client's request and the device key.
func (f *Fetcher) Key() string { return f.o.Client.CertificateKey() + "\x00" + f.keyName }

// CSR is the PEM certificate signing request the Fetcher sends (public: it holds the
// public key and the requested subject only).
func (f *Fetcher) CSR() string { return f.csr }

// Fetch asks for a new certificate for the device key. Failures are *fetch.Error
// values; an answer that is not a certificate for the device key is ErrUnavailable
// (the next attempt may get a good one).
func (f *Fetcher) Fetch(ctx context.Context) (token.Token, error) {
	r, sent, err := f.o.Client.Certificate(ctx, f.csr)
	if err != nil {
		return token.Token{}, err
	}
	c := &token.Certificate{PEM: r.Certificate, Chain: r.CaCertificates, Serial: r.SerialNumber, KeyFile: f.o.KeyFile}
	if c.Pair, err = f.pair(c); err != nil {
		return token.Token{}, &fetch.Error{Class: fetch.ErrUnavailable, Status: http.StatusOK, Detail: err.Error()}
	}
	return token.Token{
		Response: oapi.TokenResponse{
			ExpiresAt: r.ExpiresAt, ExpiresIn: r.ExpiresIn, RefreshAfter: r.RefreshAfter, ServerTime: r.ServerTime,
			Hub: r.Hub, Kind: r.Kind, Mqtt: r.Mqtt, Amqp: r.Amqp, Https: r.Https,
		},
		RequestedAt: sent, Key: f.Key(), Certificate: c,
	}, nil
}

// pair joins c's certificate and chain with the device key, as TLS presents them,
// after checking the certificate is for that key.
func (f *Fetcher) pair(c *token.Certificate) (*tls.Certificate, error) {
	certs, err := domain.ParseCertificates(c.PEM)
	if err != nil || len(certs) == 0 {
		return nil, errors.New("certificate: no PEM certificate")
	}
	leaf := certs[0]
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(f.key.Public()) {
		return nil, ErrMismatch
	}
	chain, err := domain.ParseCertificates(c.Chain)
	if err != nil {
		return nil, errors.New("caCertificates: " + err.Error())
	}
	p := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: f.key, Leaf: leaf}
	for _, ca := range chain {
		p.Certificate = append(p.Certificate, ca.Raw)
	}
	return p, nil
}

// Store is what Saved persists through; *persist.File implements it.
type Store interface {
	Load() (token.Token, error)
	Save(token.Token) error
}

// Saved wraps s so that a certificate loaded after a reboot is joined with the device
// key again (a certificate for another key is an error: the keeper then asks for a new
// one); it implements keeper.Store.
func (f *Fetcher) Saved(s Store) Store { return saved{s: s, f: f} }

type saved struct {
	s Store
	f *Fetcher
}

func (s saved) Save(t token.Token) error { return s.s.Save(t) }

func (s saved) Load() (token.Token, error) {
	t, err := s.s.Load()
	if err != nil {
		return t, err
	}
	if t.Certificate == nil {
		return token.Token{}, errors.New("saved credential is not a certificate")
	}
	if t.Certificate.Pair, err = s.f.pair(t.Certificate); err != nil {
		return token.Token{}, fmt.Errorf("saved certificate: %w", err)
	}
	return t, nil
}
