package domain

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Default token lifetimes for a hub that sets none.
const (
	DefaultTTL = time.Hour
	DefaultMax = 24 * time.Hour
)

// NormalizeCommon applies the rules every kind shares: a parseable CA bundle, and
// lifetimes defaulted and ordered. Kind-specific rules are the kind's (package target).
func (h *Hub) NormalizeCommon() error {
	if h.CACert != "" {
		if err := CheckPEMCerts(h.CACert); err != nil {
			return Invalid("caCert: %v", err)
		}
	}
	if h.DefaultTTL == 0 {
		h.DefaultTTL = DefaultTTL
	}
	if h.MaxTTL == 0 {
		h.MaxTTL = max(DefaultMax, h.DefaultTTL)
	}
	if h.DefaultTTL > h.MaxTTL {
		return Invalid("defaultTtlSeconds (%d) exceeds maxTtlSeconds (%d)", int(h.DefaultTTL.Seconds()), int(h.MaxTTL.Seconds()))
	}
	return nil
}

// Lifetime applies a hub's and a device's policy to a requested token lifetime: the
// request (or the hub default), capped by the hub maximum and the device's own cap.
func Lifetime(h Hub, d Device, requested time.Duration) time.Duration {
	ttl := requested
	if ttl <= 0 {
		ttl = h.DefaultTTL
	}
	limit := h.MaxTTL
	if d.MaxTTL > 0 && d.MaxTTL < limit {
		limit = d.MaxTTL
	}
	return min(ttl, limit)
}

// CheckKey accepts what Azure accepts as a SAS key: base64 of 16 to 64 bytes.
func CheckKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return errors.New("not valid base64")
	}
	if len(b) < 16 || len(b) > 64 {
		return fmt.Errorf("decodes to %d bytes; IoT Hub keys are 16 to 64 bytes", len(b))
	}
	return nil
}

// NewKey returns a fresh 256-bit key in the form IoT Hub shows keys.
func NewKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.StdEncoding.EncodeToString(b[:])
}

// FillKeyPair generates whichever of a primary/secondary pair is empty and checks the
// ones given.
func FillKeyPair(primary, secondary *string) error {
	for _, k := range []*string{primary, secondary} {
		if *k == "" {
			*k = NewKey()
			continue
		}
		if err := CheckKey(*k); err != nil {
			return Invalid("key: %v", err)
		}
	}
	return nil
}

// CheckPEMCerts accepts a PEM bundle of one or more parseable certificates and nothing
// else.
func CheckPEMCerts(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %q is not a CERTIFICATE", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return errors.New("a certificate does not parse")
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	return nil
}
