package vaultstore

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/tokensvc/tokensvc/internal/store"
)

// Device certificates (mode certificate) are signed by Vault's PKI secrets engine:
// {PKIMount}/sign/{role} with the CSR, the subject CN the service chose and the
// lifetime. The role enforces the rest (client certificates only, digitalSignature,
// no CSR names, bounded TTL: see deploy/vault/README or the operator steps), and the
// CA's private key never leaves Vault. The shipped policy allows roles named
// tokensvc-* only.

// Defaults of Config.PKIMount and Config.PKIRole.
const (
	DefaultPKIMount = "pki"
	DefaultPKIRole  = "tokensvc-device"
)

var roleRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// PKISigned is what Vault's PKI engine answers to a sign: PEM texts.
type PKISigned struct {
	Certificate string
	// Chain is the CA chain, issuing CA first.
	Chain []string
}

// pkiRole returns role, or the configured default for "".
func (s *Store) pkiRole(role string) (string, error) {
	if role == "" {
		return s.cfg.PKIRole, nil
	}
	if !roleRE.MatchString(role) {
		return "", fmt.Errorf("PKI role %q: letters, digits, '.', '_' and '-' only", role)
	}
	return role, nil
}

// SignCSR has the PKI role (the default for "") sign csrPEM for subject cn, valid for
// ttl. One Vault call bounded by RequestTimeout, as every call on the request path;
// errors wrap store.ErrUnavailable when Vault cannot answer in time,
// ErrPermissionDenied when the policy lacks the role's sign path.
func (s *Store) SignCSR(ctx context.Context, role, csrPEM, cn string, ttl time.Duration) (PKISigned, error) {
	if err := s.live(); err != nil {
		return PKISigned{}, fmt.Errorf("pki sign: %w", err)
	}
	role, err := s.pkiRole(role)
	if err != nil {
		return PKISigned{}, err
	}
	body, err := json.Marshal(map[string]any{
		"csr":                  csrPEM,
		"common_name":          cn,
		"ttl":                  strconv.FormatInt(int64(ttl/time.Second), 10) + "s",
		"format":               "pem",
		"exclude_cn_from_sans": true, // the CN is an identity, not a host name
	})
	if err != nil {
		return PKISigned{}, err
	}
	var r struct {
		Data struct {
			Certificate string   `json:"certificate"`
			IssuingCA   string   `json:"issuing_ca"`
			CAChain     []string `json:"ca_chain"`
		} `json:"data"`
	}
	path := s.cfg.PKIMount + "/sign/" + role
	if err := s.put(ctx, s.cfg.RequestTimeout, path, body, &r); err != nil {
		return PKISigned{}, fmt.Errorf("pki sign with role %s: %w", role, s.classify(ctx, err, "write", path))
	}
	if r.Data.Certificate == "" {
		return PKISigned{}, fmt.Errorf("pki sign with role %s: no certificate in the answer", role)
	}
	chain := r.Data.CAChain
	if len(chain) == 0 && r.Data.IssuingCA != "" {
		chain = []string{r.Data.IssuingCA}
	}
	return PKISigned{Certificate: r.Data.Certificate, Chain: chain}, nil
}

// PKIChain returns the CA chain (PEM, issuing CA first) that role (the default for
// "") signs with: the role's issuer. Two Vault reads bounded by WriteTimeout (an
// operator call); errors as SignCSR, store.ErrNotFound for no such role.
func (s *Store) PKIChain(ctx context.Context, role string) ([]string, error) {
	if err := s.live(); err != nil {
		return nil, fmt.Errorf("pki chain: %w", err)
	}
	role, err := s.pkiRole(role)
	if err != nil {
		return nil, err
	}
	var rr struct {
		Data struct {
			IssuerRef string `json:"issuer_ref"`
		} `json:"data"`
	}
	path := s.cfg.PKIMount + "/roles/" + role
	if err := s.get(ctx, s.cfg.WriteTimeout, path, nil, &rr); err != nil {
		return nil, fmt.Errorf("pki role %s: %w", role, err)
	}
	ref := rr.Data.IssuerRef
	if ref == "" {
		ref = "default"
	}
	if !roleRE.MatchString(ref) {
		return nil, fmt.Errorf("pki role %s: issuer_ref %q is not a plain name", role, ref)
	}
	var ir struct {
		Data struct {
			Certificate string   `json:"certificate"`
			CAChain     []string `json:"ca_chain"`
		} `json:"data"`
	}
	path = s.cfg.PKIMount + "/issuer/" + ref + "/json"
	if err := s.get(ctx, s.cfg.WriteTimeout, path, nil, &ir); err != nil {
		return nil, fmt.Errorf("pki issuer %s: %w", ref, err)
	}
	if len(ir.Data.CAChain) > 0 {
		return ir.Data.CAChain, nil
	}
	if ir.Data.Certificate == "" {
		return nil, fmt.Errorf("pki issuer %s: no certificate in the answer: %w", ref, store.ErrNotFound)
	}
	return []string{ir.Data.Certificate}, nil
}
