package main

import (
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// readFileFlag reads the key file a flag names; nil when the flag is unset. Keys come
// from files, never from flags, so they do not show in the process list.
func readFileFlag(path, what string) (*string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if what == "public key" {
		s = string(b)
	}
	return &s, nil
}

// certFingerprint reads the first certificate of a PEM file and returns the fingerprint
// an x509 credential pins (domain.CertFingerprint).
func certFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("certificate: %s holds no PEM CERTIFICATE", path)
	}
	return domain.CertFingerprint(block.Bytes), nil
}
