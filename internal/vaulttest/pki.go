package vaulttest

import (
	"context"
	"os"
	"testing"

	vault "github.com/hashicorp/vault/api"
)

// PKIRole is the role MountPKI creates: what the README's operator steps for device
// certificates set up, so the tests run against exactly that.
var PKIRole = map[string]any{
	"allow_any_name":                     true,
	"enforce_hostnames":                  false,
	"cn_validations":                     []string{"disabled"}, // CNs are device IDs, not host names
	"allow_ip_sans":                      false,
	"allowed_uri_sans":                   "",
	"allowed_other_sans":                 "",
	"use_csr_common_name":                false,
	"use_csr_sans":                       false,
	"require_cn":                         true,
	"server_flag":                        false,
	"client_flag":                        true,
	"code_signing_flag":                  false,
	"email_protection_flag":              false,
	"key_usage":                          []string{"DigitalSignature"},
	"ext_key_usage":                      []string{},
	"key_type":                           "any",
	"basic_constraints_valid_for_non_ca": true,
	"not_before_duration":                "300s",
	"max_ttl":                            "720h",
	"no_store":                           true,
	"generate_lease":                     false,
}

// MountPKI mounts the PKI secrets engine at mount, generates an internal root CA (its
// key never leaves Vault; leaves are truncated to its validity) and creates role with
// PKIRole's settings. It returns the root's PEM certificate and the generate call's
// answer, so tests can check it holds no private key.
func (s *Server) MountPKI(tb testing.TB, mount, role string) (caPEM string, generated map[string]any) {
	tb.Helper()
	s.mount(tb, mount, &vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}})
	c := s.Client(tb)
	ctx := context.Background()
	sec, err := c.Logical().WriteWithContext(ctx, mount+"/root/generate/internal", map[string]any{
		"common_name": "tokensvc device CA (" + mount + ")",
		"key_type":    "ec",
		"key_bits":    256,
		"ttl":         "87600h",
		"issuer_name": "devices",
	})
	if err != nil || sec == nil {
		tb.Fatalf("generate root in %s: %v", mount, err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/issuer/devices", map[string]any{"leaf_not_after_behavior": "truncate"}); err != nil {
		tb.Fatalf("issuer settings in %s: %v", mount, err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/roles/"+role, PKIRole); err != nil {
		tb.Fatalf("create role %s/%s: %v", mount, role, err)
	}
	caPEM, _ = sec.Data["certificate"].(string)
	return caPEM, sec.Data
}

// PolicyToken writes the policy file at path (deploy/vault/tokensvc.hcl, relative to
// the test's package) as policy "tokensvc" and returns a token holding exactly it (no
// default policy), valid for ttl, so a test proves the published policy is enough.
func (s *Server) PolicyToken(tb testing.TB, path, ttl string) string {
	tb.Helper()
	policy, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	root := s.Client(tb)
	ctx := context.Background()
	if err := root.Sys().PutPolicyWithContext(ctx, "tokensvc", string(policy)); err != nil {
		tb.Fatal(err)
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"tokensvc"}, TTL: ttl, NoDefaultPolicy: true})
	if err != nil {
		tb.Fatal(err)
	}
	return tok.Auth.ClientToken
}
