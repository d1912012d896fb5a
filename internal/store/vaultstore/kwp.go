package vaultstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// AES Key Wrap with Padding (RFC 5649), which Vault Transit's BYOK import expects for
// the key material and which the Go standard library does not provide.

// kwpIVPrefix is the RFC 5649 alternative initial value's constant half (§3).
const kwpIVPrefix = 0xA65959A6

// errKWPUnwrap is deliberately vague: saying which check failed would help an
// attacker probing with forged ciphertexts.
var errKWPUnwrap = errors.New("key unwrap failed")

// wrapKWP wraps plaintext (at least 1 byte) under kek (an AES key) per RFC 5649 §4.1.
func wrapKWP(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || uint64(len(plaintext)) > 0xffffffff {
		return nil, errors.New("key wrap: plaintext must be 1 to 2^32-1 bytes")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	padded := (len(plaintext) + 7) &^ 7
	out := make([]byte, 8+padded)
	binary.BigEndian.PutUint32(out[0:4], kwpIVPrefix)
	binary.BigEndian.PutUint32(out[4:8], uint32(len(plaintext)))
	copy(out[8:], plaintext) // the padding bytes are already zero
	if padded == 8 {
		// A single 64-bit block is encrypted in one AES call, without W (§4.1 step 2).
		block.Encrypt(out, out)
		return out, nil
	}
	wrapW(block, out)
	return out, nil
}

// unwrapKWP reverses wrapKWP, checking the integrity value, length and padding (§4.2, §3).
func unwrapKWP(kek, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < 16 || len(ciphertext)%8 != 0 {
		return nil, errKWPUnwrap
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, len(ciphertext))
	copy(buf, ciphertext)
	if len(buf) == 16 {
		block.Decrypt(buf, buf)
	} else {
		unwrapW(block, buf)
	}
	n := len(buf) - 8 // padded plaintext length
	mli := int(binary.BigEndian.Uint32(buf[4:8]))
	var prefix [4]byte
	binary.BigEndian.PutUint32(prefix[:], kwpIVPrefix)
	ok := subtle.ConstantTimeCompare(buf[0:4], prefix[:])
	// The message length must fall in the last 8-byte block: 8*(n/8-1) < MLI <= n.
	if mli <= n-8 || mli > n {
		ok = 0
	} else {
		var pad byte
		for _, b := range buf[8+mli:] {
			pad |= b
		}
		ok &= subtle.ConstantTimeByteEq(pad, 0)
	}
	if ok != 1 {
		clear(buf)
		return nil, errKWPUnwrap
	}
	return buf[8 : 8+mli], nil
}

// wrapW is the RFC 3394 wrapping process W (§2.2.1, index form) in place on
// buf = A || R[1] .. R[n], with A already set to the initial value.
func wrapW(block cipher.Block, buf []byte) {
	n := len(buf)/8 - 1
	var b [16]byte
	copy(b[:8], buf[:8])
	for j := range 6 {
		for i := 1; i <= n; i++ {
			copy(b[8:], buf[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(buf[8*i:8*i+8], b[8:])
		}
	}
	copy(buf[:8], b[:8])
}

// unwrapW is the inverse W^-1 (RFC 3394 §2.2.2, index form) in place.
func unwrapW(block cipher.Block, buf []byte) {
	n := len(buf)/8 - 1
	var b [16]byte
	copy(b[:8], buf[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(b[8:], buf[8*i:8*i+8])
			block.Decrypt(b[:], b[:])
			copy(buf[8*i:8*i+8], b[8:])
		}
	}
	copy(buf[:8], b[:8])
}
