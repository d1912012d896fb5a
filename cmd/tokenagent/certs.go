package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/filesink"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/cliflags"
)

// minCertTTL is the shortest certificate lifetime the service takes.
const minCertTTL = 300 * time.Second

// certFlags declares the certificate mode's options.
func certFlags(s *cliflags.Set, c *Config) {
	s.Bool(&c.Certificate, "certificate", "get device certificates (POST /token/certificate, hubs in mode certificate) instead of tokens")
	s.String(&c.CertKeyFile, "cert-key-file", "the device's private key, created 0600 when missing and kept across renewals (default: cert-dir or state-dir /device.key)")
	s.String(&c.CertKeyType, "cert-key-type", "type of a key the agent creates: ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-3072")
	s.String(&c.CertDir, "cert-dir", "keep device.crt (certificate and chain), ca.crt and mqtt.json here for software that reads files")
}

// validateCert checks the certificate mode's options.
func (c Config) validateCert() []error {
	var errs []error
	if !c.Certificate {
		if c.CertKeyFile != "" || c.CertDir != "" {
			errs = append(errs, errors.New("cert-key-file and cert-dir need certificate"))
		}
		return errs
	}
	if c.TTL != 0 && (c.TTL < minCertTTL || c.TTL%time.Second != 0) {
		errs = append(errs, fmt.Errorf("ttl must be 0 or whole seconds of at least %v for a certificate", minCertTTL))
	}
	if !slices.Contains(certificate.KeyTypes, certificate.KeyType(c.CertKeyType)) {
		errs = append(errs, fmt.Errorf("cert-key-type must be one of %v", certificate.KeyTypes))
	}
	if c.Link == "amqp" {
		errs = append(errs, errors.New("certificate mode links over mqtt (or none)"))
	}
	if c.Socket != "" {
		errs = append(errs, errors.New("socket serves tokens; in certificate mode software reads the cert-dir files"))
	}
	if c.Gateway {
		errs = append(errs, errors.New("gateway mode bridges leaves with their tokens; it does not take certificate"))
	}
	return errs
}

// KeyFile is where the device's private key is kept in certificate mode.
func (c Config) KeyFile() string {
	switch {
	case c.CertKeyFile != "":
		return c.CertKeyFile
	case c.CertDir != "":
		return certificate.KeyFileIn(c.CertDir)
	}
	return certificate.KeyFileIn(c.StateDir)
}

// credentialSource is what the keeper is built from: the fetcher, the store and the key.
type credentialSource struct {
	fetcher keeper.Fetcher
	store   keeper.Store
	key     string
	// files are the certificate directory's file sink entries (certificate mode).
	files []filesink.File
}

// newCredentialSource returns fc with the token file, or in certificate mode a
// certificate.Fetcher on fc with the certificate file (and the cert-dir files).
func newCredentialSource(c Config, fc *fetch.Client, opts certificate.Options) (credentialSource, error) {
	if !c.Certificate {
		store, err := persist.New(filepath.Join(c.StateDir, "token.json"))
		return credentialSource{fetcher: fc, store: store, key: fc.Key()}, err
	}
	store, err := persist.New(filepath.Join(c.StateDir, "certificate.json"))
	if err != nil {
		return credentialSource{}, err
	}
	opts.Client, opts.KeyFile, opts.KeyType = fc, c.KeyFile(), certificate.KeyType(c.CertKeyType)
	opts.DeviceID, opts.Module = c.DeviceID, c.Module
	cf, err := certificate.New(opts)
	if err != nil {
		return credentialSource{}, err
	}
	src := credentialSource{fetcher: cf, store: cf.Saved(store), key: cf.Key()}
	if c.CertDir != "" {
		if err := os.MkdirAll(c.CertDir, 0o700); err != nil {
			return credentialSource{}, fmt.Errorf("cert-dir: %w", err)
		}
		if src.files, err = certificate.Files(c.CertDir); err != nil {
			return credentialSource{}, err
		}
	}
	return src, nil
}
