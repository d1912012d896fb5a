package vaultstore

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// Transit key names are derived from the hub name or device and module IDs, so HMAC
// finds a key without reading any record first (at most one Vault call per token, fewer
// when concurrent tokens share a batch, see batch.go). The SHA-256
// keeps any ID character out of the URL and the name within Transit's rules; 128 bits
// of it make a collision between two names practically impossible.

// hubKeyName names the Transit key holding a hub's policy or group key.
func (s *Store) hubKeyName(hub string) string {
	sum := sha256.Sum256([]byte(hub))
	return s.keyPrefix + "-h-" + hex.EncodeToString(sum[:16])
}

// Key slots of a device or module.
const (
	slotPrimary   = "primary"
	slotSecondary = "secondary"
)

// deviceKeyName names the Transit key holding a device's (moduleID "") or module's key
// in slot (primary or secondary).
func (s *Store) deviceKeyName(deviceID, moduleID, slot string) string {
	sum := sha256.Sum256([]byte(deviceID + "\x00" + moduleID))
	return s.keyPrefix + "-d-" + hex.EncodeToString(sum[:16]) + "-" + slot
}

// transitKey is one key to import: its Transit name and its raw HMAC key bytes.
type transitKey struct {
	name string
	key  []byte
}

func clearKeys(keys []transitKey) {
	for _, k := range keys {
		clear(k.key)
	}
}

// hubKeyBytes returns the HMAC key a Transit hub signs with: the bytes its base64
// policy (or group) key spells, or the key's UTF-8 text where the kind said so
// (PolicyKeyText, Event Hubs). Errors never quote the key.
func hubKeyBytes(h *domain.Hub) ([]byte, error) {
	if h.PolicyKey == "" {
		return nil, fmt.Errorf("hub %q signs with its %s but has no policyKey", h.Name, h.Mode)
	}
	if h.PolicyKeyText {
		return []byte(h.PolicyKey), nil
	}
	return decodeKey(h.PolicyKey, "policyKey of hub "+fmt.Sprintf("%q", h.Name))
}

func decodeKey(k, what string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%s is not valid base64", what)
	}
	return b, nil
}

// deviceKeys returns the keys to import for a device on a hub whose devices keep
// their keys in Transit: primary (required) and secondary (if set) of the device and
// of each module.
func (s *Store) deviceKeys(d *domain.Device) ([]transitKey, error) {
	var keys []transitKey
	add := func(moduleID, slot, k string, required bool) error {
		what := fmt.Sprintf("%s key of device %q", slot, d.ID)
		if moduleID != "" {
			what = fmt.Sprintf("%s key of module %q of device %q", slot, moduleID, d.ID)
		}
		if k == "" {
			if required {
				return fmt.Errorf("%s is missing; a device on a Transit hub signing with device keys needs one", what)
			}
			return nil
		}
		b, err := decodeKey(k, what)
		if err != nil {
			return err
		}
		keys = append(keys, transitKey{name: s.deviceKeyName(d.ID, moduleID, slot), key: b})
		return nil
	}
	err := add("", slotPrimary, d.PrimaryKey, true)
	if err == nil {
		err = add("", slotSecondary, d.SecondaryKey, false)
	}
	for _, m := range d.Modules {
		if err != nil {
			break
		}
		if m.ID == "" {
			err = fmt.Errorf("device %q has a module without an ID", d.ID)
			break
		}
		if err = add(m.ID, slotPrimary, m.PrimaryKey, true); err == nil {
			err = add(m.ID, slotSecondary, m.SecondaryKey, false)
		}
	}
	if err != nil {
		clearKeys(keys)
		return nil, err
	}
	return keys, nil
}

// Transit accepts HMAC keys of 32 to 512 bytes. HMAC (RFC 2104 §2) zero-pads a key
// shorter than the hash block (64 bytes for SHA-256) and replaces a longer one by its
// hash, so padding a short key with zeros to 32 bytes, or hashing one longer than 512,
// yields exactly the same MACs as the key itself.
const (
	transitMinHMACKey = 32
	transitMaxHMACKey = 512
)

// transitHMACKey returns the bytes to import for key; fresh says they are a new slice
// the caller should clear after use.
func transitHMACKey(key []byte) (k []byte, fresh bool) {
	switch {
	case len(key) < transitMinHMACKey:
		k := make([]byte, transitMinHMACKey)
		copy(k, key)
		return k, true
	case len(key) > transitMaxHMACKey:
		sum := sha256.Sum256(key)
		return sum[:], true
	}
	return key, false
}

// wrappingKey returns Transit's RSA wrapping key, fetched once.
func (s *Store) wrappingKey(ctx context.Context) (*rsa.PublicKey, error) {
	s.wrapMu.Lock()
	defer s.wrapMu.Unlock()
	if s.wrapKey != nil {
		return s.wrapKey, nil
	}
	var r struct {
		Data struct {
			PublicKey string `json:"public_key"`
		} `json:"data"`
	}
	path := s.cfg.TransitMount + "/wrapping_key"
	if err := s.get(ctx, s.cfg.WriteTimeout, path, nil, &r); err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(r.Data.PublicKey))
	if block == nil {
		return nil, fmt.Errorf("read %s: no PEM public key in the answer", path)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %v", path, err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("read %s: wrapping key is %T, want RSA", path, pub)
	}
	s.wrapKey = rsaPub
	return rsaPub, nil
}

// errTransitKeyExists means an import found a key of that name already in Transit.
var errTransitKeyExists = errors.New("transit key already exists")

// importKey imports key as a new Transit hmac key called name with Transit's BYOK
// protocol: the key travels wrapped with AES-KWP under a one-time AES-256 key, which
// itself travels RSA-OAEP(SHA-256)-encrypted under Transit's wrapping key, so it is
// never readable on the wire or in a proxy's logs, even without TLS.
func (s *Store) importKey(ctx context.Context, name string, key []byte) error {
	pub, err := s.wrappingKey(ctx)
	if err != nil {
		return fmt.Errorf("import transit key %s: %w", name, err)
	}
	var eph [32]byte
	defer clear(eph[:])
	_, _ = rand.Read(eph[:]) // crypto/rand.Read never fails (Go 1.24+)
	k, fresh := transitHMACKey(key)
	wrapped, err := wrapKWP(eph[:], k)
	if fresh {
		clear(k)
	}
	if err != nil {
		return fmt.Errorf("import transit key %s: %w", name, err)
	}
	sealed, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, eph[:], nil)
	if err != nil {
		return fmt.Errorf("import transit key %s: %w", name, err)
	}
	ct := base64.StdEncoding.EncodeToString(append(sealed, wrapped...))
	body := []byte(`{"type":"hmac","hash_function":"SHA256","ciphertext":"` + ct + `"}`)
	path := s.cfg.TransitMount + "/keys/" + name + "/import"
	err = s.put(ctx, s.cfg.WriteTimeout, path, body, nil)
	if err != nil {
		if vaultSays(err, 0, "cannot be used with an existing key") {
			return fmt.Errorf("import transit key %s: %w", name, errTransitKeyExists)
		}
		return fmt.Errorf("import transit key %s: %w", name, s.classify(ctx, err, "write", path))
	}
	return nil
}

// importReplacing imports key as name, replacing a key of that name left behind by an
// earlier crash. The caller must hold the claim on the key's owner, which guarantees
// that such a key belongs to no live record and to no concurrent create.
func (s *Store) importReplacing(ctx context.Context, name string, key []byte) error {
	err := s.importKey(ctx, name, key)
	if !errors.Is(err, errTransitKeyExists) {
		return err
	}
	s.log.Warn("vaultstore: replacing a Transit key left behind by an interrupted operation", "key", name)
	if err := s.deleteKey(ctx, name); err != nil {
		return err
	}
	return s.importKey(ctx, name, key)
}

// importAll imports keys in order. On failure it deletes the ones it imported (the
// caller holds the claim) and returns the import error.
func (s *Store) importAll(ctx context.Context, keys []transitKey) error {
	for i, k := range keys {
		if err := s.importReplacing(ctx, k.name, k.key); err != nil {
			s.deleteKeysBestEffort(context.WithoutCancel(ctx), names(keys[:i]))
			return err
		}
	}
	return nil
}

func names(keys []transitKey) []string {
	n := make([]string, len(keys))
	for i, k := range keys {
		n[i] = k.name
	}
	return n
}

// deleteKey deletes Transit key name; a key that is already gone is fine. Transit
// refuses to delete a key until deletion_allowed is set on it, which guards against
// deleting by mistake, so it is set first.
func (s *Store) deleteKey(ctx context.Context, name string) error {
	cfgPath := s.cfg.TransitMount + "/keys/" + name + "/config"
	if err := s.put(ctx, s.cfg.WriteTimeout, cfgPath, []byte(`{"deletion_allowed":true}`), nil); err != nil {
		if vaultSays(err, http.StatusBadRequest, "could be found") {
			return nil
		}
		return fmt.Errorf("delete transit key %s: %w", name, s.classify(ctx, err, "write", cfgPath))
	}
	path := s.cfg.TransitMount + "/keys/" + name
	ctx2, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	if _, err := s.c.Logical().DeleteWithContext(ctx2, path); err != nil {
		if vaultSays(err, http.StatusBadRequest, "not found") {
			return nil
		}
		return fmt.Errorf("delete transit key %s: %w", name, s.classify(ctx2, err, "delete", path))
	}
	return nil
}

// deleteKeysBestEffort deletes keys, logging any it could not: they are orphans then,
// harmless (nothing refers to them) and replaced by the next import of the same name.
func (s *Store) deleteKeysBestEffort(ctx context.Context, keyNames []string) {
	for _, n := range keyNames {
		if err := s.deleteKey(ctx, n); err != nil {
			s.log.Warn("vaultstore: could not delete a Transit key; it is left as an unused orphan", "key", n, "err", err)
		}
	}
}

// HMAC returns HMAC-SHA256(key, msg) computed inside Vault Transit (tokens.TransitSigner).
// The key is the hub's policy or group key when the hub signs with one, else the
// primary key of the device (moduleID "") or of its module. It makes one Vault call,
// bounded by RequestTimeout, shared with concurrent HMACs with the same key when
// batching is on (see batch.go). It returns store.ErrNotFound (wrapped) when
// Transit has no such key, store.ErrUnavailable when Vault cannot answer in time.
func (s *Store) HMAC(ctx context.Context, hub domain.Hub, deviceID, moduleID string, msg []byte) ([]byte, error) {
	if err := s.live(); err != nil {
		return nil, fmt.Errorf("transit hmac: %w", err)
	}
	if !hub.Transit {
		return nil, fmt.Errorf("transit hmac for hub %q: the hub does not keep its keys in Transit", hub.Name)
	}
	var name string
	if hub.Mode == domain.SignDeviceKey {
		name = s.deviceKeyName(deviceID, moduleID, slotPrimary)
	} else {
		name = s.hubKeyName(hub.Name)
	}

	mac, err := do(ctx, s.batch.hmac, s.hmacCall, name, base64.StdEncoding.EncodeToString(msg))
	if err != nil {
		what := fmt.Sprintf("hub %q", hub.Name)
		switch {
		case hub.Mode == domain.SignDeviceKey && moduleID != "":
			what = fmt.Sprintf("module %q of device %q", moduleID, deviceID)
		case hub.Mode == domain.SignDeviceKey:
			what = fmt.Sprintf("device %q", deviceID)
		}
		return nil, fmt.Errorf("transit hmac for %s: %w", what, err)
	}
	return mac, nil
}
