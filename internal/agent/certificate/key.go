package certificate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
)

// KeyType is the kind of private key the agent creates.
type KeyType string

// Key types (the hub's certificateKeyTypes must allow the one chosen).
const (
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"
	RSA2048   KeyType = "rsa-2048"
	RSA3072   KeyType = "rsa-3072"
)

// KeyTypes lists the key types, the default first.
var KeyTypes = []KeyType{ECDSAP256, ECDSAP384, RSA2048, RSA3072}

// LoadOrCreateKey returns the device's private key from path, creating it (of type t,
// PEM PKCS#8, mode 0600, written atomically, its directory 0700) when the file does not
// exist; created says which. An existing key is used whatever its type. A file
// accessible by group or others is refused (credential.ErrPermissions), one without an
// ECDSA or RSA key too (credential.ErrFormat); errors never quote the contents. Two
// processes creating the key at once end with the same one: the first to write it,
// which the other then loads.
func LoadOrCreateKey(path string, t KeyType) (key crypto.Signer, created bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		key, err := createKey(path, t)
		if !errors.Is(err, fs.ErrExist) {
			return key, err == nil, err
		}
	}
	b, err := credential.ReadPrivate(path)
	if err != nil {
		return nil, false, err
	}
	key, err = parseKey(b)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return key, false, nil
}

func createKey(path string, t KeyType) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch t {
	case ECDSAP256, "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, fmt.Errorf("key type %q: want one of %v", t, KeyTypes)
	}
	if err != nil {
		return nil, fmt.Errorf("generate private key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("private key directory: %w", err)
	}
	if err := persist.WriteNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// parseKey reads a PEM ECDSA or RSA private key (PKCS#8, SEC 1 or PKCS#1).
func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: no PEM block", credential.ErrFormat)
	}
	k, err := credential.ParsePrivateKey(blk)
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%w: %T keys are not supported (ECDSA or RSA)", credential.ErrFormat, k)
}

// Fingerprint is the SHA-256 of pub's PKIX encoding, in hex: it names a key without
// revealing anything secret.
func Fingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
